"""Hard edges of params.yaml (issue 12): every bad file ends in one line, before any job.

Each case edits the repository's own params.yaml (as text, so YAML spellings survive) or
writes raw bytes, runs ``python -m mae_hlvm check --params FILE`` in-process and asserts:
exit code 2, exactly one line of output, ``error:`` followed by the key and value the
case names, no traceback, and the same text as the ParamsError that
:func:`mae_hlvm.core.config.load_params` raises (the function the Snakefile calls too).
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mae_hlvm.core import config, limits, params_yaml
from mae_hlvm.core.config import ParamsError, load_params, parse_params
from mae_hlvm.core.params_yaml import read_params_yaml
from mae_hlvm.workflow.cli import main

REPO = Path(__file__).resolve().parents[1]
BASE_TEXT = (REPO / "params.yaml").read_text(encoding="utf-8")
BASE = yaml.safe_load(BASE_TEXT)


# ----------------------------------------------------------------------------- text edits


def set_value(text: str, section: str, key: str, value: str) -> str:
    """``text`` with ``section.key``'s value replaced by the YAML text ``value`` (comment kept)."""
    lines = text.split("\n")
    inside = False
    for i, line in enumerate(lines):
        if re.match(r"\S", line):
            inside = line.startswith(f"{section}:")
        elif inside and line.startswith(f"  {key}:"):
            comment = re.search(r"\s+#.*$", line)
            lines[i] = f"  {key}: {value}" + (comment.group(0) if comment else "")
            return "\n".join(lines)
    raise KeyError(f"{section}.{key} not in params.yaml")


def add_line(text: str, section: str, key: str, line: str) -> str:
    """``text`` with ``line`` inserted after ``section.key``'s line."""
    marker = set_value(text, section, key, "\0")  # find the line once
    lines = marker.split("\n")
    at = next(i for i, ln in enumerate(lines) if "\0" in ln)
    original = text.split("\n")
    return "\n".join(original[: at + 1] + [line] + original[at + 1 :])


def edits(*changes: tuple[str, str]) -> Callable[[], str]:
    """A case body: ("section.key", "yaml value") pairs applied to the repository's params.yaml."""

    def make() -> str:
        text = BASE_TEXT
        for dotted, value in changes:
            section, key = dotted.split(".")
            text = set_value(text, section, key, value)
        return text

    return make


def raw(content: str | bytes) -> Callable[[], str | bytes]:
    return lambda: content


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], str | bytes | None]  # None: the case names a path that is no file
    pattern: str  # a regex the one line must contain after "error: "


LATIN1 = BASE_TEXT.replace("# params.yaml: the one file", "# Caf\u00e9: the one file", 1).encode("latin-1", errors="replace")
assert b"\xe9" in LATIN1
DUPLICATE_EPOCHS = add_line(BASE_TEXT, "train", "epochs", "  epochs: 400")

CASES = [
    # --- the file itself
    Case("missing-file", lambda: None, r"nope\.yaml: file not found"),
    Case("directory", lambda: "DIR", r": is a directory, not a params file"),
    Case("latin-1", raw(LATIN1), r"not UTF-8 text \(byte 0xe9 at line \d+\): save the file as UTF-8"),
    Case("utf-16", raw(BASE_TEXT.encode("utf-16")), r"not UTF-8 text \(byte 0xff at line 1\)"),
    Case("empty", raw(""), r"params\.yaml: the file is empty: it needs the sections data, model"),
    Case("comments-only", raw("# nothing yet\n\n"), r"the file is empty"),
    Case("a-list", raw("- data\n- model\n"), r"expected a mapping of sections .*got a list"),
    Case("a-scalar", raw("400\n"), r"expected a mapping of sections .*got a single int"),
    Case("syntax", edits(("train.epochs", "[4")), r"not valid YAML at line \d+, column \d+: expected ',' or ']'"),
    Case("tab", raw(BASE_TEXT.replace("\n  epochs:", "\n\tepochs:", 1)), r"not valid YAML at line \d+, column 1: found character '\\t'"),
    Case("two-documents", raw(BASE_TEXT + "\n---\ndata: {}\n"), r"not valid YAML at line \d+.*expected a single document"),
    Case("nul-character", edits(("train.device", '"cp\0u"')), r"not valid YAML at line \d+: the control character U\+0000"),
    Case("unhashable-key", raw(BASE_TEXT + "\n? [a, b]\n: 1\n"), r"not valid YAML at line \d+, column \d+: found unhashable key"),
    # --- repeated keys (Snakemake keeps the last, DVC refuses the file)
    Case("duplicate-key", raw(DUPLICATE_EPOCHS), r"train\.epochs \(line \d+\): repeated key, first set at line \d+"),
    Case("duplicate-section", raw(BASE_TEXT + "\ntrain:\n  epochs: 400\n"), r"train \(line \d+\): repeated key, first set at line \d+"),
    Case("duplicate-in-real", raw(add_line(BASE_TEXT, "real", "seeds", "  seeds: [5]")), r"real\.seeds \(line \d+\): repeated key"),
    # --- YAML 1.1 (Snakemake) vs YAML 1.2 (DVC)
    Case(
        "leading-zero-octal", edits(("grid.seeds", "[0, 010]")),
        r"grid\.seeds\[1\] \(line \d+\): `010` is read as 8 by Snakemake \(YAML 1\.1\) and as 10 by DVC \(YAML 1\.2\): "
        r"write 10 or 8 without a leading zero",
    ),
    Case("leading-zero-08", edits(("train.epochs", "08")), r"train\.epochs \(line \d+\): `08` is read as text .* as 8 by DVC .*write 8 without the leading zero"),
    Case("0o-octal", edits(("train.epochs", "0o17")), r"train\.epochs .*`0o17` is read as text .* as 15 by DVC .*write 15"),
    Case("0b-binary", edits(("train.epochs", "0b101")), r"train\.epochs .*`0b101` is read as 5 by Snakemake .*write 5"),
    Case("underscores", edits(("data.n_train", "3_000")), r"data\.n_train .*`3_000` is read as 3000 .*write 3000 without underscores"),
    Case("sexagesimal", edits(("train.epochs", "1:30")), r"train\.epochs .*`1:30` is read as 90 by Snakemake .* as text by DVC .*write 90"),
    Case("bool-no", edits(("model.norm_pix_loss", "no")), r"model\.norm_pix_loss .*`no` is read as false .* as text by DVC .*write false"),
    Case("bool-on", edits(("real.enabled", "on")), r"real\.enabled .*`on` is read as true .*write true"),
    Case("bool-yes-key", raw(BASE_TEXT + "\nyes: 1\n"), r"yes \(line \d+\): `yes` is read as true"),
    Case(
        "exponent-without-dot", edits(("train.base_lr", "1e-3")),
        r"train\.base_lr \(line \d+\): `1e-3` is read as text by Snakemake \(YAML 1\.1\) and as 0\.001 by DVC \(YAML 1\.2\): "
        r"write 1\.0e-3 \(YAML 1\.1, which Snakemake uses, reads 1e-3 as text\)",
    ),
    Case("exponent-unsigned", edits(("real.base_lr", "1.5e4")), r"real\.base_lr .*`1\.5e4` is read as text .*write 1\.5e\+4"),
    Case("n_train-1e9", edits(("data.n_train", "1e9")), r"data\.n_train .*`1e9` .*write 1\.0e\+9, or 1000000000 for a whole number"),
    Case("image_size-1.2e6", edits(("data.image_size", "1.2e6")), r"data\.image_size .*`1\.2e6` is read as text"),
    Case("seed-1e23", edits(("data.seed", "1e23")), r"data\.seed .*`1e23` is read as text"),
    Case("dvc-laxer", edits(("train.device", "-_0")), r"train\.device .*`-_0` is read as text by Snakemake .* as 0 by DVC"),
    Case("dvc-cannot-read", edits(("train.device", "-_")), r"train\.device .*`-_` is read as text .*DVC \(YAML 1\.2\) cannot read it"),
    Case("signed-dot", edits(("grid.mask_ratios", "[+.5]")), r"grid\.mask_ratios\[0\] .*`\+\.5` .*write 0\.5"),
    Case("date", edits(("real.path", "2024-01-01")), r"real\.path .*`2024-01-01` is read as a date .*quote it"),
    Case("merge-key", raw(add_line(BASE_TEXT, "train", "epochs", "  <<: {threads: 2}")), r"train\.<< \(line \d+\): `<<` is a YAML 1\.1 special key"),
    Case("explicit-tag", edits(("train.epochs", "!!str 4")), r"train\.epochs \(line \d+\): the YAML tag !!str is not allowed"),
    # --- blank sections and values
    Case("real-blank", raw(re.sub(r"\nreal:.*", "\nreal:\n", BASE_TEXT, flags=re.S)), r"real: the section is empty \(null\)"),
    Case("data-blank", raw(BASE_TEXT.replace("\ndata:", "\ndata:\nx_data:", 1)), r"data: the section is empty \(null\)"),
    Case("value-blank", edits(("train.epochs", "")), r"train\.epochs: no value \(null\)"),
    Case("int-as-float", edits(("train.epochs", "4.0")), r"train\.epochs=4\.0: Input should be a valid integer; write 4"),
    Case("huge-int-in-float", edits(("data.class_separation", "9" * 400)), r"data\.class_separation=9{10,}\.\.\.9+ \(400 characters\)"),
    # --- non-finite floats
    Case("mlp_ratio-inf", edits(("model.mlp_ratio", ".inf")), r"model\.mlp_ratio=inf: must be a finite number"),
    Case("weight_decay-inf", edits(("train.weight_decay", ".inf")), r"train\.weight_decay=inf: must be a finite number"),
    Case("noise_scales-inf", edits(("data.noise_scales", "[.inf, 0.7, 0.7, 0.7]")), r"data\.noise_scales\[0\]=inf: must be a finite"),
    Case("pixel_noise-nan", edits(("data.pixel_noise", ".nan")), r"data\.pixel_noise=nan: must be a finite number"),
    Case("class_separation--inf", edits(("data.class_separation", "-.inf")), r"data\.class_separation=-inf: must be a finite"),
    Case("mask_ratio-nan", edits(("grid.mask_ratios", "[0.5, .nan]")), r"grid\.mask_ratios\[1\]=nan: must be a finite"),
    Case("sweep_b_ratio-nan", edits(("real.sweep_b_ratio", ".NaN")), r"real\.sweep_b_ratio=nan: must be a finite"),
    Case("warmup-inf", edits(("train.warmup_epochs", ".inf")), r"train\.warmup_epochs=inf: must be a finite"),
    Case("ridge-alpha-inf", edits(("probe.ridge_alphas", "[1.0, .inf]")), r"probe\.ridge_alphas\[1\]=inf: must be a finite"),
    Case("betas-nan", edits(("train.betas", "[.nan, 0.95]")), r"train\.betas\[0\]=nan: must be a finite"),
    # --- seeds numpy/scikit-learn accept
    Case("grid-seed-2**32", edits(("grid.seeds", "[0, 4294967296]")), r"grid\.seeds\[1\]=4294967296: a seed must be below 2\*\*32"),
    Case("grid-seed-1e23", edits(("grid.seeds", "[100000000000000000000000]")), r"grid\.seeds\[0\]=100000000000000000000000: a seed"),
    Case("data-seed", edits(("data.seed", "1099511627776")), r"data\.seed=1099511627776: a seed must be below"),
    Case("eval_seed", edits(("real.eval_seed", "4294967296")), r"real\.eval_seed=4294967296: a seed must be below"),
    Case("split_seed", edits(("real.split_seed", "4294967296")), r"real\.split_seed=4294967296: a seed must be below"),
    Case("real-seeds", edits(("real.seeds", "[8589934592]")), r"real\.seeds\[0\]=8589934592: a seed must be below"),
    # --- the model
    Case("embed_dim-66", edits(("model.embed_dim", "66"), ("model.num_heads", "2")), r"model\.embed_dim=66: must be divisible by 4 .*sine-cosine.*try 64 or 68"),
    Case("embed_dim-66-heads-6", edits(("model.embed_dim", "66"), ("model.num_heads", "6")), r"model\.embed_dim=66: must be divisible by 4 .*try 60 or 72"),
    Case("decoder_embed_dim-34", edits(("model.decoder_embed_dim", "34"), ("model.decoder_num_heads", "2")), r"model\.decoder_embed_dim=34: must be divisible by 4"),
    Case("mlp-hidden-0", edits(("model.mlp_ratio", "0.001")), r"model\.mlp_ratio=0\.001: gives embed_dim=64 an MLP of .* 0 hidden"),
    Case("embed_dim-1e9", edits(("model.embed_dim", "1000000000")), r"model\.embed_dim=1000000000: the MAE .* weights, over 2e\+09"),
    Case("depth-1e8", edits(("model.depth", "100000000")), r"model\.depth=100000000: the MAE .* weights"),
    Case("vit_patch-over-leaf", edits(("model.vit_patch", "4"), ("grid.mask_units", "[4]")), r"model\.vit_patch=4: larger than a leaf's 2x2-pixel block .*<= 2"),
    Case("tokens", edits(("data.image_size", "256")), r"model\.vit_patch=2: data\.image_size=256 makes 16384 tokens per image, over 4096"),
    Case("real-tokens", edits(("real.image_size", "512")), r"real\.vit_patch=4: real\.image_size=512 makes 16384 tokens"),
    # --- sizes: memory, splits, classes
    Case("n_train-1", edits(("data.n_train", "1")), r"data\.n_train=1: the class probe needs at least 10 images per class .*raise data\.n_train to 100"),
    Case("n_test-1", edits(("data.n_test", "1")), r"data\.n_test=1: the class probe needs .*raise data\.n_test to 100"),
    Case("n_classes-1e6", edits(("data.n_classes", "1000000")), r"data\.n_train=3000: .*data\.n_classes=1000000.*lower data\.n_classes to at most 300"),
    Case("n_train-memory", edits(("data.n_train", "1000000000")), r"data\.n_train=1000000000: the dataset needs .* = [\d,.]+ GiB of RAM .*over the 1,024\.0 GiB allowed"),
    Case("image_size-memory", edits(("data.image_size", "1200000")), r"data\.image_size=1200000: the dataset needs 4000 images .* GiB of RAM"),
    Case("real-image_size-memory", edits(("real.image_size", "1048576")), r"real\.image_size=1048576: the dataset needs 3500 images .* GiB of RAM"),
    Case("leaf-too-wide", edits(("data.latent_dims", "[16, 8, 4, 7]")), r"data\.latent_dims=\[16, 8, 4, 7\]: a leaf holds 13 parts but renders only 2x2x3=12 pixel values"),
    Case("copy-unbalanced", edits(("data.latent_dims", "[15, 8, 4, 3]")), r"data\.latent_dims\[0\]=15: a level-0 node holds 15 items, each copied into 2 of 4 children"),
    Case("copy-texture", edits(("data.texture_separation", "0.4")), r"data\.texture_separation: the copytree generator has no texture cue"),
    Case("copy-half-leaves", edits(("model.vit_patch", "1"), ("grid.mask_units", "[1, 2]")), r"grid\.mask_units\[0\]=1: the copytree generator's leaves are 2x2-pixel blocks"),
    Case("real-n_train-1", edits(("real.n_train", "1")), r"real\.n_train=1: the real track needs at least 10 train images"),
    Case("real-n_test-1", edits(("real.n_test", "1")), r"real\.n_test=1: the real track needs at least 20 test images \(10 classes"),
    Case("real-mnist-too-many", edits(("real.n_train", "70000")), r"real\.n_train=70000: MNIST's train split has only 60000 images"),
    Case("real-mnist-test-too-many", edits(("real.n_test", "10001")), r"real\.n_test=10001: MNIST's test split has only 10000"),
    Case(
        "real-digits-too-many", edits(("real.dataset", "digits"), ("real.fit", "resize"), ("real.n_train", "1500")),
        r"real\.n_train=1500: real\.n_train \+ real\.n_test = 2000, but scikit-learn's digits has only 1797",
    ),
    Case("real-digits-pad", edits(("real.dataset", "digits"), ("real.image_size", "4")), r"real\.image_size=4: fit 'pad' cannot shrink 8x8 digits"),
    # --- the schedule and the optimiser
    Case("warmup-1e300", edits(("train.warmup_epochs", "1.0e+300")), r"train\.warmup_epochs=1e\+300: must be below train\.epochs=\d+"),
    Case("warmup-equals-epochs", edits(("train.warmup_epochs", "4.0"), ("train.epochs", "4")), r"train\.warmup_epochs=4\.0: must be below train\.epochs=4"),
    Case("warmup-vs-real-epochs", edits(("train.warmup_epochs", "3.5"), ("train.epochs", "4"), ("real.epochs", "3")), r"train\.warmup_epochs=3\.5: the real track shares it .*real\.epochs=3"),
    Case("epochs-1e9", edits(("train.epochs", "1000000000")), r"train\.epochs=1000000000: .* image passes per run, over the 1e\+10"),
    Case("real-epochs", edits(("real.epochs", "10000000")), r"real\.epochs=10000000: .* image passes"),
    Case("real-probe-epochs", edits(("real.probe_epochs", "10000000")), r"real\.probe_epochs=10000000: .* image passes"),
    Case("base_lr-100", edits(("train.base_lr", "100.0")), r"train\.base_lr=100\.0: the peak learning rate .* = 12\.5 is over 1"),
    Case("real-base_lr", edits(("real.base_lr", "50.0")), r"real\.base_lr=50\.0: the peak learning rate real\.base_lr x real\.batch_size"),
    Case("weight_decay-5", edits(("train.weight_decay", "5.0")), r"train\.weight_decay=5\.0: must be at most 1"),
    Case("threads", edits(("train.threads", "100000")), r"train\.threads=100000: must be at most 1024 CPU threads per job"),
    Case("cv_folds", edits(("probe.cv_folds", "500")), r"probe\.cv_folds=500: stratified CV needs .* use at most 300"),
    Case("class_separation-1e7", edits(("data.class_separation", "1.0e+7")), r"data\.class_separation=10000000\.0: must be at most 1e\+06"),
    Case("noise_scale-1e7", edits(("data.noise_scales", "[1.0, 1.0e+7, 0.7, 0.7]")), r"data\.noise_scales\[1\]=10000000\.0: must be at most"),
]
assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def keep_logging():
    """cli.main reconfigures the root logger on the captured stream; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_case(case: Case, tmp_path: Path) -> Path:
    content = case.make()
    if content is None:
        return tmp_path / "nope.yaml"
    if content == "DIR":
        return tmp_path
    path = tmp_path / "params.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def check_output(argv_path: Path, capsys) -> tuple[int, list[str]]:
    rc = main(["check", "--params", str(argv_path)])
    out, err = capsys.readouterr()
    return rc, [ln for ln in (out + err).splitlines() if ln.strip()]


def test_the_table_is_large_enough():
    assert len(CASES) >= 45


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_params_end_in_one_error_line(case: Case, tmp_path, capsys, keep_logging):
    path = write_case(case, tmp_path)
    rc, lines = check_output(path, capsys)
    assert rc == 2, lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert "Traceback" not in line
    head, sep, message = line.partition("error: ")
    assert sep and "error" not in head, line
    assert re.search(case.pattern, message), f"{case.pattern!r} not in {message!r}"
    assert message.startswith(str(path).replace("\n", "\\n")), message
    # the same text as the ParamsError the Snakefile turns into SystemExit(f"error: {err}")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == message
    assert "\n" not in message and len(message) < 600


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "content,pattern",
    [
        (LATIN1, r"not UTF-8 text \(byte 0xe9"),
        (DUPLICATE_EPOCHS.encode(), r"train\.epochs \(line \d+\): repeated key"),
        (set_value(BASE_TEXT, "grid", "seeds", "[0, 010]").encode(), r"grid\.seeds\[1\] .*`010` is read as 8"),
    ],
    ids=["latin-1", "duplicate-key", "octal"],
)
def test_cli_subprocess_has_no_traceback(tmp_path, content, pattern):
    (tmp_path / "params.yaml").write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "mae_hlvm", "check", "--params", "params.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert proc.returncode == 2, out
    assert len(lines) == 1 and "Traceback" not in out, out
    assert re.search(r"error: params\.yaml: " + pattern, lines[0]), lines[0]


def snakefile_loader_block() -> str:
    """The Snakefile's params prologue: ``try: P = load_params(...) ... except ParamsError: SystemExit``."""
    text = (REPO / "Snakefile").read_text()
    block = re.search(r"^try:\n(?:[ \t]+.*\n|\n)+?except ParamsError as err:\n(?:[ \t]+.*\n)+", text, re.M)
    assert block, "the Snakefile no longer loads params in a try/except ParamsError block"
    return block.group(0)


def test_snakefile_stops_with_the_same_line(tmp_path, monkeypatch):
    block = snakefile_loader_block()
    assert 'load_params("params.yaml")' in block
    assert 'raise SystemExit(f"error: {err}")' in block
    (tmp_path / "params.yaml").write_bytes(LATIN1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as expected:
        load_params("params.yaml")

    class NoPipeline:  # the block touches pipeline only after params loaded
        def __getattr__(self, name):
            raise AssertionError(f"pipeline.{name} reached with bad params")

    scope = {"load_params": load_params, "ParamsError": ParamsError, "pipeline": NoPipeline()}
    with pytest.raises(SystemExit) as stop:
        exec(compile(block, str(REPO / "Snakefile"), "exec"), scope)  # noqa: S102 - the repository's own file
    assert stop.value.code == f"error: {expected.value}"


# ----------------------------------------------------------------------------- what must still load


GOOD_FILES = [REPO / "params.yaml", *sorted(REPO.glob("profiles/*/params.yaml"))]


@pytest.mark.parametrize("path", GOOD_FILES, ids=[str(p.relative_to(REPO)) for p in GOOD_FILES])
def test_shipped_params_still_load(path):
    params = load_params(path)
    assert params.data.n_train > 0
    # test fixtures write params with yaml.safe_dump: that spelling must pass the YAML check too
    data = yaml.safe_load(path.read_text())
    assert read_params_yaml(yaml.safe_dump(data)) == data


def test_there_are_profiles():
    assert len(GOOD_FILES) >= 3


# the section overrides other test modules give tests/conftest.py's tiny_workdir
TINY_WORKDIRS = {
    "test_faults": dict(
        data=dict(image_size=8, depth=1, latent_dims=[4, 4], noise_scales=[1.0, 1.0]),
        model=dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2),
        train=dict(epochs=4, batch_size=16, base_lr=1e-3),
    ),
    "test_model_train": dict(
        data=dict(image_size=8, depth=1, latent_dims=[4, 4], noise_scales=[1.0, 0.5]),
        model=dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_num_heads=2),
        train=dict(epochs=3, batch_size=16, base_lr=1e-3),
    ),
    "test_evaluate": dict(
        data=dict(image_size=8, depth=1, latent_dims=[4, 4], noise_scales=[1.0, 1.0]),
        model=dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_num_heads=2),
        train=dict(epochs=1, batch_size=20, device="cpu", threads=1),
        real=dict(probe_epochs=2, knn_k=3),
    ),
}


@pytest.mark.parametrize("sections", TINY_WORKDIRS.values(), ids=TINY_WORKDIRS.keys())
def test_tiny_workdir_params_still_load(tiny_workdir, sections):
    tiny_workdir(40, 30, **sections, grid=dict(mask_units=[2, 4], mask_ratios=[0.5, 0.75], seeds=[0]))
    assert load_params("params.yaml").data.image_size == 8


def test_memory_limit_is_read_through_one_function(monkeypatch):
    # At a 256 MiB limit the default run (21 MB synthetic, 14 MB real) fits; the GPU
    # profile's synthetic data (110,000 images with the cue-conflict set, counted with latents: 0.55 GiB) does not. At 600 MiB
    # that fits, and so does its real track (70,000 MNIST images at 32 px: 0.27 GiB).
    monkeypatch.setattr(limits, "MEMORY_LIMIT_BYTES", 256 * 2**20)
    load_params(REPO / "params.yaml")
    with pytest.raises(ParamsError, match=r"data\.n_train=100000: the dataset needs 105000 images .* 0\.42 GiB .*0\.25 GiB allowed"):
        load_params(REPO / "profiles" / "gpu" / "params.yaml")
    monkeypatch.setattr(limits, "MEMORY_LIMIT_BYTES", 600 * 2**20)
    load_params(REPO / "profiles" / "gpu" / "params.yaml")
    monkeypatch.setattr(limits, "MEMORY_LIMIT_BYTES", 270 * 2**20)
    with pytest.raises(ParamsError, match=r"data\.n_train=100000"):
        load_params(REPO / "profiles" / "gpu" / "params.yaml")


def test_model_weight_estimate_matches_the_model():
    torch = pytest.importorskip("torch")
    from mae_hlvm.core.model import build_model

    params = parse_params(yaml.safe_load(BASE_TEXT))
    model_cfg = params.model.model_dump()
    geometry = {"image_size": params.data.image_size, "channels": params.data.channels}
    model = build_model(model_cfg, geometry, 0.5, params.model.vit_patch)
    actual = sum(p.numel() for p in model.parameters())
    assert config.model_weights(params.model, params.data.channels, params.model.vit_patch) == actual
    del torch


# ----------------------------------------------------------------------------- YAML 1.1 vs 1.2, measured


def _ruamel():
    ruamel_yaml = pytest.importorskip("ruamel.yaml")
    return ruamel_yaml.YAML(typ="safe")  # what dvc.utils.serialize.parse_yaml uses


SCALARS = (
    "010 0010 -010 +010 08 09 0 00 -0 +0 0o17 0O17 0x1F 0X1F -0x1F 0b101 +12 1_000 1_000.5 1:30 -1:30 1:30.5 "
    "1e-3 1E3 1e3 -1e3 +1e3 1.e3 .5e3 1.0e-3 1.0e3 1.5 .5 5. +.5 -.5 1.0E+3 .inf -.inf +.inf .Inf .nan .NaN inf nan "
    "yes no Yes NO on off On OFF y n Y N true false True FALSE tRue null Null ~ None 2001-12-14 0_1 00.5 01.5 "
    "auto cpu mnist AB 0.75 1e400 1.0e+400"
).split()


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def _readings(text: str, ruamel) -> tuple[object, object, str | None]:
    """(PyYAML's value, ruamel's value, our refusal or None) of ``k: text``."""
    doc = f"k: {text}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ruamel.load(doc)["k"]
    try:
        read_params_yaml(doc)
        refusal = None
    except ParamsError as err:
        refusal = str(err)
    return yaml.safe_load(doc)["k"], theirs, refusal


@pytest.mark.parametrize("text", SCALARS)
def test_what_is_accepted_reads_the_same_in_both_tools(text):
    pyyaml, ruamel, refusal = _readings(text, _ruamel())
    if refusal is None:
        assert _same(pyyaml, ruamel), (text, pyyaml, ruamel)
    elif "by DVC (YAML 1.2)" in refusal:
        assert not _same(pyyaml, ruamel), refusal  # the message's claim about DVC is true


# Spellings refused by the YAML 1.2 core schema alone, with or without ruamel installed.
CORE_REFUSED = ["010", "08", "0o17", "0b101", "1_000", "1:30", "yes", "off", "1e-3", "+.5", "2001-12-14"]


@pytest.mark.parametrize("text", CORE_REFUSED)
def test_refused_without_ruamel_too(text, monkeypatch):
    monkeypatch.setattr(params_yaml, "_dvc_yaml", lambda: None)
    with pytest.raises(ParamsError, match=r"k \(line 1\): `.*` is read as"):
        read_params_yaml(f"k: {text}\n")


@pytest.mark.parametrize("text", ["0x_", "0b_", "+0x_"])
def test_a_number_pyyaml_cannot_convert_is_one_line(text):
    # found by the property test below: PyYAML resolves these as ints and then raises ValueError
    with pytest.raises(ParamsError, match=r"^params.yaml: not valid YAML: a value looks like a number but is not one"):
        read_params_yaml(f"k: {text}\n")


@settings(max_examples=300, deadline=None)
@given(text=st.from_regex(r"[-+]?[0-9._:eEoxb]{1,7}", fullmatch=True))
def test_numberlike_scalars_never_pass_when_the_tools_disagree(text):
    try:
        yaml.safe_load(f"k: {text}\n")
    except (yaml.YAMLError, ValueError):  # PyYAML cannot load `0x_` at all: that case is tested below
        assume(False)
    ruamel = _ruamel()
    try:
        pyyaml, theirs, refusal = _readings(text, ruamel)
    except Exception:  # ruamel refuses some spellings PyYAML takes; not a disagreement we can measure
        assume(False)
    if refusal is None:
        assert _same(pyyaml, theirs), (text, pyyaml, theirs)


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.floats(), st.integers(), st.booleans(), st.none()))
def test_values_yaml_safe_dump_writes_are_read_back_unchanged(value):
    data = {"section": {"key": value, "list": [value]}}
    back = read_params_yaml(yaml.safe_dump(data))
    assert _same(back["section"]["key"], value) and _same(back["section"]["list"][0], value)

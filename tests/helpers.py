"""Helpers shared by the test modules: a temporary copy of the repository with a tiny params
override, the two tools run in it, and what each would run. No test module imports another."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mae_hlvm.core import io, paths
from mae_hlvm.core.config import DataParams, load_params, parse_params
from mae_hlvm.core.data import Dataset
from mae_hlvm.core.io import write_json
from mae_hlvm.workflow import cli, pipeline, receipts

# cli's log format: "%(asctime)s %(name)s %(message)s"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")

REPO = Path(__file__).resolve().parents[1]
# params.yaml's real section as shipped: the known-good base the real-track tests override
DEFAULT_REAL = yaml.safe_load((REPO / "params.yaml").read_text())["real"]
VENV_BIN = str(Path(sys.executable).parent)
GIT = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]


# ----------------------------------------------------------------------------- helpers


def env_for(root: Path) -> dict[str, str]:
    """Subprocess environment running ``root``'s own copy of the package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root / "src")
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.pop("DVC_STAGE", None)
    return env


def sh(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=root, env=env_for(root), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_repo(dest: Path) -> Path:
    """The repository's files (tracked and not ignored) copied into ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for rel in (".dvc/config", ".dvcignore"):  # in case they are not yet tracked
        if (REPO / rel).exists() and not (dest / rel).exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def edit_params(root: Path, **changes: object) -> None:
    """Set dotted keys (``grid.mask_ratios=[...]``) in ``root/params.yaml``."""
    path = root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, leaf = key.split("__")
        raw[section][leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


# The real track on sklearn digits at 8x8: Sweep A = ratios 0.25, 0.5 at unit 4; Sweep B =
# unit 4 at ratio 0.5 (the cell A shares). Same stage set as the default params (sweep AB,
# a bundled dataset), so the committed dvc.yaml still applies.
TINY_REAL = dict(
    real__dataset="digits", real__image_size=8, real__fit="resize", real__n_train=64, real__n_test=40,
    real__vit_patch=2, real__mask_ratios=[0.25, 0.5], real__mask_units=[4], real__sweep_a_unit=4,
    real__sweep_b_ratio=0.5, real__seeds=[0], real__epochs=1, real__batch_size=32, real__probe_epochs=2,
    real__knn_k=3, real__n_eval_images=2, real__tsne_points=12,
)
TINY_REAL_JOBS = {"train_real_A@0.25-0", "train_real_A@0.5-0", "train_real_B@4-0"}
# the stability set's real runs of the same cells (seed 0, twice the epochs)
TINY_REAL_STABLE_JOBS = {"train_real_stable_A@0.25", "train_real_stable_A@0.5", "train_real_stable_B@4"}


def tiny_params(root: Path) -> None:
    """A grid small enough to run end to end in seconds per job on 2 cores. The shipped dvc.lock
    goes: its records are of other params, and every DVC write of dvc.lock parses and rewrites
    all of it (the shipped 123 entries against the tiny run's 31)."""
    (root / "dvc.lock").unlink(missing_ok=True)
    edit_params(
        root,
        data__image_size=8, data__depth=2, data__latent_dims=[4, 2, 2], data__noise_scales=[1.0, 0.5, 0.5],
        data__n_classes=2, data__n_train=64, data__n_test=32,
        model__vit_patch=2, model__embed_dim=16, model__depth=1, model__num_heads=2,
        model__decoder_embed_dim=8, model__decoder_depth=1, model__decoder_num_heads=2,
        train__epochs=1, train__batch_size=32, train__threads=1, train__device="cpu",
        probe__cv_folds=2, probe__nystroem_components=16, probe__batch_size=64, probe__n_recon_images=2, probe__max_train=100000,
        grid__mask_ratios=[0.25, 0.5], grid__mask_units=[2], grid__seeds=[0],
        stability__mask_ratios=[0.25, 0.5], stability__mask_units=[2],
        **TINY_REAL,
    )


def init_repo(root: Path, remote: Path | None = None) -> None:
    sh(root, *GIT, "init", "-q")
    if not (root / ".dvc" / "config").exists():
        sh(root, "dvc", "init", "-q")
    if remote is not None:
        sh(root, "dvc", "remote", "add", "-d", "-f", "local", str(remote))
    commit(root, "init")


def commit(root: Path, msg: str) -> None:
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-q", "--allow-empty", "-m", msg)


def snakemake_plan(root: Path, *targets: str) -> dict[str, int]:
    """Jobs ``snakemake -n`` would run (for ``targets``, or all), per rule (``all`` left out); {} when up to date."""
    out = sh(root, "snakemake", *targets, "-n", "--quiet", "rules").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE))
    return {rule: int(n) for rule, n in counts.items() if rule != "all"}


def dvc_stale(root: Path, *targets: str) -> set[str]:
    """Stages (of ``targets``, or all) ``dvc status`` reports changed themselves (their inputs or params changed)."""
    return set(json.loads(sh(root, "dvc", "status", "--json", *targets).stdout or "{}"))


def dvc_would_run(root: Path) -> set[str]:
    """What ``dvc repro`` reruns: the changed stages and every stage downstream of them."""
    code = (
        "import json, sys, networkx as nx, dvc.repo\n"
        "r = dvc.repo.Repo('.')\n"
        "g = r.index.graph\n"
        "stale = set(json.loads(sys.argv[1]))\n"
        "out = set()\n"
        "for s in g.nodes:\n"
        "    if s.addressing in stale:\n"
        "        out |= {s.addressing} | {a.addressing for a in nx.ancestors(g, s)}\n"
        "print(json.dumps(sorted(out)))"
    )
    return set(json.loads(sh(root, sys.executable, "-c", code, json.dumps(sorted(dvc_stale(root)))).stdout))


def plan_of_stages(stages: set[str]) -> dict[str, int]:
    """DVC stage names -> the per-rule job counts Snakemake prints."""
    counts: dict[str, int] = {}
    for name in stages:
        rule = name.split("@")[0]
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def assert_agree_up_to_date(root: Path) -> None:
    assert dvc_stale(root) == set()
    assert snakemake_plan(root) == {}


def snakemake_jobs(root: Path) -> dict[tuple[str, ...], str]:
    """Every job of Snakemake's full DAG: sorted outputs -> resolved shell command."""
    out = sh(root, "snakemake", "-n", "-p", "--forceall").stdout
    jobs = {}
    for block in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)^Shell command: ([^\n]*)$", out, re.MULTILINE | re.DOTALL):
        rule, body, cmd = block.groups()
        if rule == "all":
            continue
        outputs = re.search(r"^\s+output: (.*)$", body, re.MULTILINE).group(1)
        jobs[tuple(sorted(outputs.split(", ")))] = cmd.strip()
    return jobs


def dvc_jobs(root: Path) -> dict[tuple[str, ...], str]:
    """Every stage of DVC's resolved dvc.yaml: sorted outputs -> command."""
    code = (
        "import json, dvc.repo\n"
        "r = dvc.repo.Repo('.')\n"
        "print(json.dumps([[sorted(o.def_path for o in s.outs), s.cmd] for s in r.index.stages]))"
    )
    stages = json.loads(sh(root, sys.executable, "-c", code).stdout)
    return {tuple(outs): cmd for outs, cmd in stages}


def tracked_outputs(root: Path) -> list[str]:
    return pipeline.all_outputs(load_params(root / "params.yaml"))


def flip_byte_keep_mtime(path: Path, offset: int = -3) -> None:
    """A silent corruption: one byte changed, size and mtime as before (neither tool notices)."""
    st = path.stat()
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def start(root: Path, *cmd: str) -> subprocess.Popen:
    """A tool started in the background, in its own process group (killable as a whole)."""
    return subprocess.Popen(
        list(cmd), cwd=root, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )


def wait_for(cond, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drop_from_dvc_cache(root: Path, *outs: str) -> None:
    """Remove these outputs' objects (and the run cache) from ``root``'s DVC cache."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] in outs:
                (root / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]).unlink(missing_ok=True)
    shutil.rmtree(root / ".dvc/cache/runs", ignore_errors=True)


def make_read_only(folder: Path) -> None:
    """Unwritable for this process: its mode, and for root (whom modes do not stop) the immutable flag."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)


def make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def make_image_folder(root: Path, classes: tuple[str, ...] = ("n01440764", "n01443537"), per_class: int = 3) -> None:
    """A tiny ImageNet-layout folder: ``root/<wnid>/<name>.JPEG``, RGB of mixed sizes."""
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(classes):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(30 + 4 * i, 40 - 2 * c, 3), dtype=np.uint8)
            Image.fromarray(arr, mode="RGB").save(root / wnid / f"{wnid}_{i}.JPEG", format="JPEG")


# ----------------------------------------------------------------------------- small fixtures

TINY_PROBE_PARAMS = {
    "data": {
        "image_size": 8, "channels": 2, "depth": 2, "latent_dims": [2, 2, 2], "noise_scales": [1.0, 0.5, 0.5],
        "class_separation": 2.0, "n_classes": 3, "pixel_noise": 0.05, "n_train": 90, "n_test": 30, "seed": 0,
    },
    "model": {
        "vit_patch": 2, "embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_embed_dim": 8, "decoder_depth": 1,
        "decoder_num_heads": 2, "mlp_ratio": 2.0, "norm_pix_loss": False,
    },
    "train": {
        "epochs": 1, "batch_size": 30, "base_lr": 1.5e-4, "weight_decay": 0.05, "warmup_epochs": 0.0,
        "betas": [0.9, 0.95], "device": "cpu", "precision": "fp32", "threads": 1,
    },
    "probe": {
        "pooling": "mean", "ridge_alphas": [0.1, 1.0, 10.0], "cv_folds": 3, "nystroem_components": 20, "max_train": 100000,
        "batch_size": 16, "n_recon_images": 5,
    },
    "grid": {"mask_ratios": [0.5], "mask_units": [4], "seeds": [0]},
}


def tiny_probe_dataset(with_latents: bool = True) -> Dataset:
    """120 images 2x8x8 whose quadrant intensities carry the level-1 latents."""
    rng = np.random.default_rng(12)
    n = 120
    latents = [rng.standard_normal((n, 2**lv, 2**lv, 2)).astype(np.float32) for lv in range(3)]
    quadrant = np.repeat(np.repeat(latents[1].transpose(0, 3, 1, 2), 4, axis=2), 4, axis=3)
    images = (quadrant + 0.1 * rng.standard_normal((n, 2, 8, 8))).astype(np.float32)
    return Dataset(
        images=images,
        labels=np.arange(n) % 3,
        is_test=np.arange(n) >= 90,
        latents=latents if with_latents else [],
        settings={"source": "test_probe"},
    )


TINY_DATA = {
    "image_size": 8,
    "channels": 3,
    "depth": 2,
    "latent_dims": [4, 4, 6],
    "noise_scales": [1.0, 0.7, 0.7],
    "class_separation": 2.0,
    "n_classes": 3,
    "pixel_noise": 0.05,
    "n_train": 120,
    "n_test": 60,
    "seed": 3,
}


def tiny_raw(**data_overrides: object) -> dict:
    """The repo's params.yaml with a tiny data section and a grid that fits 8x8 images."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.pop("stability", None)  # its set names cells of the shipped grid
    raw["data"] = {**TINY_DATA, **data_overrides}
    raw["grid"] = {"mask_ratios": [0.5], "mask_units": [2, 4], "seeds": [0]}
    return raw


def tiny_data(**overrides: object) -> DataParams:
    return parse_params(tiny_raw(**overrides)).data


TINY_REAL_FOLDER = {
    "image_size": 16, "fit": "resize", "channels": 1, "vit_patch": 2, "mask_units": [2, 4, 8], "sweep_a_unit": 4,
    "n_train": 12, "n_test": 6, "split_seed": 0,
}


def write_real_params(tmp_path: Path, real: dict) -> tuple[Path, Path]:
    """A tiny params file with ``real`` overrides; (its path, the step's output path)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.pop("stability", None)  # its set names cells of the shipped grid
    raw["real"] = {**DEFAULT_REAL, **TINY_REAL_FOLDER, **real}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params, tmp_path / "out" / "real.npz"


def prepare_real_step(tmp_path: Path, monkeypatch, capsys, real: dict) -> tuple[int, Path, str]:
    """Run ``prepare-real`` on a tiny params file; (return code, output path, stderr+stdout)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    params, out = write_real_params(tmp_path, real)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli.main(["prepare-real", "--params", str(params), "--out", str(out)])
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    captured = capsys.readouterr()
    return rc, out, captured.out + captured.err


def assert_one_line_error(rc: int, out: Path, text: str, named: Path | str, reason: str) -> None:
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error: " in line]
    assert len(errors) == 1, text
    # every line on stderr is a log record: no continuation of a multi-line message
    assert all(LOG_LINE.match(line) for line in text.splitlines() if line.strip()), text
    assert re.search(rf"error: {re.escape(str(named))}: .*{reason}", errors[0]), errors[0]
    assert rc == 2
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir()), "a temporary file was left behind"


def assert_runner_exists(runner: str) -> None:
    """A step's runner (``mae_hlvm.real.report:run_report``) names a module of the package that
    defines the function (``run`` by default); checked without importing it (no torch)."""
    import ast

    module, _, function = runner.partition(":")
    source = pipeline.module_path(module.split(".", 1)[1])
    assert source.exists(), f"{runner}: no {source}"
    defined = {n.name for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.FunctionDef)}
    assert (function or "run") in defined, f"{runner}: {source.name} defines no {function or 'run'}()"


def real_cell_result(sweep: str, ratio: float, unit: int, seed: int, clean_acc: float = 50.0,
                     gate_pass: bool = True) -> dict:
    """A complete evaluate-real JSON (mae_hlvm.core.results.RealCellResult) with made-up numbers."""
    from mae_hlvm.core.cells import cell_id

    accs = {"clean": clean_acc, "noise": clean_acc / 2}
    ids = {"mask_ratio": ratio, "mask_unit": unit, "seed": seed, "sweep": sweep}
    return {
        "sweep": sweep, "cell_id": cell_id(ratio, unit, seed), "checkpoint_weights_sha256": "0" * 64,
        "gate": {"mean_pred_mse": 0.2, "linear_mse": 0.1, "recon_rel": 0.5, "gain_share": 1.0, "learned": gate_pass,
                 "last_quarter_drop": 0.004, "gate_pass": gate_pass, "gate_reason": "passes" if gate_pass else "not learned"},
        "table1": {**{p: dict(accs) for p in ("linear_cls", "linear_mean", "knn_cls", "knn_mean")}, **ids, "vit_patch": 4,
                   "n_train": 100, "n_test": 50, "shape_bias": None},
        "recon_quality": {"ssim": 0.5, "psnr": 20.0, "mse": 0.01, "neg_mse": -0.01, "n_images": 8, **ids},
    }


def recording_dvc(args_file: Path | None = None) -> str:
    """A stand-in recording program for :func:`one_valid_receipt` that records predict's outputs in
    dvc.lock with their md5, as ``dvc commit`` does (and writes its arguments to ``args_file``)."""
    outs = [o.path for o in pipeline.outputs("predict")]
    return (
        f"#!{sys.executable}\n"
        "import hashlib, json, sys\n"
        f"outs = {outs!r}\n"
        "entry = {'cmd': 'x', 'outs': [{'path': p, 'md5': hashlib.md5(open(p, 'rb').read()).hexdigest()} for p in outs]}\n"
        "open('dvc.lock', 'w').write(json.dumps({'schema': '2.0', 'stages': {'predict': entry}}))\n"
        + (f"open({str(args_file)!r}, 'w').write(' '.join(sys.argv[1:]))\n" if args_file else "")
    )


def one_valid_receipt(tmp_path: Path, monkeypatch, dvc_script: str) -> str:
    """For the glue tests: a working copy with one finished job's receipt and a stand-in recording
    program (``bin/dvc``, named in $MAE_HLVM_DVC_COMMIT and first on PATH)."""
    monkeypatch.chdir(tmp_path)
    Path(".dvc").mkdir()
    params = load_params(REPO / "params.yaml")
    name = pipeline.dvc_stage_name("predict")
    for o in pipeline.outputs("predict"):
        io.write_text(o.path, "{}")
    rec = receipts.job_receipt("predict", params, None)
    monkeypatch.setattr(receipts, "job_receipt", lambda *a, **k: rec)
    write_json(paths.receipt(name), rec)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dvc").write_text(dvc_script)
    (fake / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(receipts.COMMIT_PROGRAM_ENV, str(fake / "dvc"))
    return name

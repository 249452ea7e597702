"""Replays across CPU kinds: the generator's bytes do not follow the CPU, and
``replay-check`` (:mod:`mae_hlvm.workflow.replay`) judges a rerun's tables within tolerance."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_raw

from mae_hlvm.workflow import replay

# --------------------------------------------------------------------------- generator bytes

# Runs in a fresh interpreter so that the CPU-kind environment variables take effect.
# Prints the float64 hash of the fixed functions and of noise-free images before the
# float32 cast (where a CPU-dependent last bit would show first), and which code paths
# numpy and OpenBLAS actually took.
_CHILD = r"""
import hashlib, json, sys
import numpy as np, threadpoolctl
try:
    from numpy._core._multiarray_umath import __cpu_features__ as feats, __cpu_dispatch__ as disp
except ImportError:  # numpy 1.x
    from numpy.core._multiarray_umath import __cpu_features__ as feats, __cpu_dispatch__ as disp
from mae_hlvm.synthetic import generate as g
from mae_hlvm.core.config import parse_params
from mae_hlvm.core.data import save_dataset

data = parse_params(json.loads(sys.argv[1])).data
fns = g.draw_functions(data)
rng = np.random.default_rng(np.random.SeedSequence(data.seed).spawn(3)[1])
h = hashlib.sha256()
arrays = [fns.class_means, fns.renderer.hidden_weight, fns.renderer.basis, g.sample(fns, data, 40, rng)[0]]
for lm in fns.levels:
    arrays += [lm.weight, lm.lift]
for a in arrays:
    h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
h.update(repr([fns.root_gain, fns.renderer.gain] + [lm.gain for lm in fns.levels]).encode())
save_dataset(sys.argv[2], g.generate_dataset(data))
blas = [i.get("architecture") or "" for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"float64": h.hexdigest(), "numpy": [k for k in disp if feats.get(k)], "blas": blas}))
"""


def _numpy_dispatch_found() -> list[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [k for k in __cpu_dispatch__ if __cpu_features__.get(k)]


def _emulated_kinds() -> dict[str, tuple[dict[str, str], str]]:
    """name -> (environment, the OpenBLAS core type it forces). Only kinds every x86-64 CPU
    can run: OpenBLAS's Prescott (SSE3) and Nehalem (SSE4.2) kernels, numpy's baseline."""
    found = _numpy_dispatch_found()
    no_avx512 = " ".join(k for k in found if k.startswith(("AVX512", "X86_V4", "AVX5124")))
    return {
        "old CPU: numpy baseline loops, OpenBLAS Prescott, glibc without FMA": ({
            "NPY_DISABLE_CPU_FEATURES": " ".join(found), "OPENBLAS_CORETYPE": "Prescott",
            "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F",
        }, "prescott"),
        "no AVX-512 loops, OpenBLAS Nehalem, 1 thread": ({
            "NPY_DISABLE_CPU_FEATURES": no_avx512, "OPENBLAS_CORETYPE": "Nehalem", "OPENBLAS_NUM_THREADS": "1",
        }, "nehalem"),
    }


def _run_generator(tmp_path: Path, name: str, env_extra: dict[str, str]) -> tuple[bytes, dict]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPY_", "OPENBLAS_", "GLIBC_"))}
    env.update(env_extra)
    out = tmp_path / f"{name}.npz"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(tiny_raw()), str(out)],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out.read_bytes(), json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the emulated kinds are x86-64")
def test_generator_bytes_do_not_follow_the_cpu_kind(tmp_path: Path) -> None:
    """The npz, and every float64 value before the float32 cast, are the same under emulated
    CPU kinds (numpy's SIMD loops, OpenBLAS's kernels, glibc's libm variants): the
    generator uses no BLAS/LAPACK and no SIMD-dispatched transcendental."""
    native_bytes, native = _run_generator(tmp_path, "native", {})
    for i, (name, (env, core)) in enumerate(_emulated_kinds().items()):
        got_bytes, got = _run_generator(tmp_path, f"kind{i}", env)
        # The emulation took effect: OpenBLAS reports other kernels (Prescott's call themselves
        # "Katmai"), numpy no more loops than natively.
        if not any(core in arch.lower() for arch in native["blas"]):
            assert got["blas"] != native["blas"], (name, got["blas"])
        assert set(got["numpy"]) <= set(native["numpy"]), name
        assert got["float64"] == native["float64"], f"{name}: float64 values differ from the native run"
        assert got_bytes == native_bytes, f"{name}: data npz differs from the native run"


def test_fixed_order_kernels_match_numpy() -> None:
    """The generator's own tanh, QR, products and cosines agree with numpy's to a few ulp."""
    from mae_hlvm.synthetic import exact as g

    x = np.linspace(-25.0, 25.0, 200_001)
    assert np.max(np.abs(g.tanh(x) - np.tanh(x))) <= 4 * np.finfo(float).eps
    small = np.geomspace(1e-300, 1e-3, 1000)
    np.testing.assert_allclose(g.tanh(small), np.tanh(small), rtol=4e-16)
    assert g.tanh(np.array([0.0]))[0] == 0.0 and g.tanh(np.array([-40.0]))[0] == -1.0
    rng = np.random.default_rng(0)
    for shape in [(6, 6), (44, 15), (12, 6)]:
        a = rng.standard_normal(shape)
        q, r = np.linalg.qr(a)
        np.testing.assert_allclose(g.householder_q(a), q * np.sign(np.diag(r)), atol=1e-13)
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(g.matmul(a, b), a @ b, atol=1e-14)
    m = np.arange(0, 17)  # one period; np.cos's own argument rounding grows beyond it
    np.testing.assert_allclose(g.cos_pi_ratio(m, 8), np.cos(np.pi * m / 8), atol=2e-16)
    np.testing.assert_array_equal(g.cos_pi_ratio(m + 16, 8), g.cos_pi_ratio(m, 8))  # exact reduction


# --------------------------------------------------------------------------- replay-check

METRICS = """mask_ratio,mask_unit,seed,r2_level0,r2_level1,probe_acc,recon_mse,gain_share,gate_pass,n_visible,actual_ratio
0.250000,2,0,0.401000,0.350000,0.488000,0.141875,-0.127676,0,48,0.250000
0.750000,4,0,0.420000,0.360000,0.500000,0.150000,0.100000,0,16,0.750000
0.750000,4,1,0.410000,0.355000,0.495000,0.149000,0.090000,1,16,0.750000
"""
BASELINES = """baseline,seed,r2_level0,probe_acc
random_init,0,0.403996,0.492000
pixels,0,0.774536,0.648000
latents,0,nan,nan
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main",
         "-c", "commit.gpgsign=false", *args],
        cwd=repo, check=True, capture_output=True,
    )


@pytest.fixture
def results_repo(tmp_path: Path) -> Path:
    """A git repository with committed results/metrics.csv and results/baselines.csv."""
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "results" / "metrics.csv").write_text(METRICS)
    (repo / "results" / "baselines.csv").write_text(BASELINES)
    _git(repo, "init", "-q")
    _git(repo, "add", "results")
    _git(repo, "commit", "-q", "-m", "results")
    return repo


def _edit(repo: Path, name: str, old: str, new: str) -> None:
    path = repo / "results" / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _check(repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = replay.main(["--repo", str(repo), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_unchanged_results_pass(results_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(results_repo, capsys)
    assert code == 0, out + err
    last = out.strip().splitlines()[-1]
    assert last.startswith("replay-check: OK:") and "HEAD" in last
    assert "results/real/table1.csv: not in the working tree" in out  # optional table, noted


def test_differences_within_tolerance_pass(results_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r2 = f"{0.420000 + 0.5 * replay.R2_TOL.abs:.6f}"
    mse = f"{0.150000 * (1 + 0.5 * replay.MSE_TOL.rel):.6f}"
    _edit(results_repo, "metrics.csv", "0.750000,4,0,0.420000,0.360000,0.500000,0.150000",
          f"0.75,4,0,{r2},0.360001,0.501000,{mse}")  # 0.75 == 0.750000 in the key and exact columns
    _edit(results_repo, "baselines.csv", "pixels,0,0.774536", "pixels,0,0.774537")
    code, out, _ = _check(results_repo, capsys)
    assert code == 0, out
    assert "OK" in out.strip().splitlines()[-1]


def test_difference_outside_tolerance_fails_and_is_shown(results_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = 0.420000 + 3 * replay.R2_TOL.abs
    _edit(results_repo, "metrics.csv", "0.750000,4,0,0.420000", f"0.750000,4,0,{bad:.6f}")
    code, out, _ = _check(results_repo, capsys)
    assert code == 1, out
    row = next(line for line in out.splitlines() if "r2_level0" in line and "r0.75_u4_s0" in line)
    assert "0.420000" in row and f"{bad:.6f}" in row and f"{bad - 0.42:+.3e}" in row
    assert replay.R2_TOL.text() in row
    assert "r0.75_u4_s1" not in out  # the other seed's row is fine
    last = out.strip().splitlines()[-1]
    assert last.startswith("replay-check: FAIL: 1 differences") and "results/metrics.csv" in last


def test_flag_flip_missing_row_and_nan_are_differences(results_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(results_repo, "metrics.csv", "0.090000,1,16", "0.090000,0,16")  # gate_pass 1 -> 0
    _edit(results_repo, "metrics.csv", "0.250000,2,0,0.401000,0.350000,0.488000,0.141875,-0.127676,0,48,0.250000\n", "")
    _edit(results_repo, "baselines.csv", "random_init,0,0.403996", "random_init,0,nan")
    code, out, _ = _check(results_repo, capsys)
    assert code == 1
    assert any("gate_pass" in line and "r0.75_u4_s1" in line and "exact" in line for line in out.splitlines())
    assert any("r0.25_u2_s0" in line and "row removed" in line for line in out.splitlines())
    assert any("baseline=random_init" in line and "nan" in line for line in out.splitlines())
    assert "FAIL: 3 differences" in out


def test_hash_and_stamp_columns_are_skipped_and_listed(results_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cells = results_repo / "results" / "cells.csv"
    cells.write_text("cell_id,checkpoint_sha256,code_revision,config_digest,r2_level0\nr0.5_u2_s0,aaa,rev1,d1,0.5\n")
    _git(results_repo, "add", "results")
    _git(results_repo, "commit", "-q", "-m", "cells")
    cells.write_text("cell_id,checkpoint_sha256,code_revision,config_digest,r2_level0\nr0.5_u2_s0,bbb,rev2,d1,0.5\n")
    code, out, _ = _check(results_repo, capsys, "--file", "results/cells.csv")
    assert code == 0, out
    skipped = next(line for line in out.splitlines() if line.startswith("skipped in results/cells.csv"))
    assert "checkpoint_sha256" in skipped and "code_revision" in skipped and "config_digest" not in skipped
    assert "differ, not judged: checkpoint_sha256, code_revision" in out
    cells.write_text("cell_id,checkpoint_sha256,code_revision,config_digest,r2_level0\nr0.5_u2_s0,bbb,rev2,d2,0.5\n")
    code, out, _ = _check(results_repo, capsys, "--file", "results/cells.csv")
    assert code == 1 and "config_digest" in out  # same params, same digest: compared exactly


def test_ref_selects_the_committed_version(results_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(results_repo, "metrics.csv", "0.750000,4,1,0.410000", "0.750000,4,1,0.300000")
    _git(results_repo, "commit", "-q", "-am", "new results")
    assert _check(results_repo, capsys)[0] == 0
    code, out, _ = _check(results_repo, capsys, "--ref", "HEAD~1")
    assert code == 1 and "HEAD~1" in out.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("nogit", [], "not inside a git repository"),
        ("", ["--ref", "no-such-rev"], "no-such-rev: unknown revision"),
        ("", ["--metrics", "results/none.csv"], "results/none.csv: missing in the working tree"),
        ("untracked", ["--file", "results/new.csv"], "no such file in that revision"),
        ("ragged", [], "line 3 has"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, results_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    setup: str, args: list[str], message: str,
) -> None:
    repo = results_repo
    if setup == "nogit":
        monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # even if tmp_path lies inside a repository
        repo = tmp_path / "plain"
        (repo / "results").mkdir(parents=True)
        (repo / "results" / "metrics.csv").write_text(METRICS)
    elif setup == "untracked":
        (repo / "results" / "new.csv").write_text("a,b\n1,2\n")
    elif setup == "ragged":
        _edit(repo, "metrics.csv", "0.750000,4,0,0.420000,", "0.750000,4,0,")
    code, out, err = _check(repo, capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err and err.startswith("replay-check: error:")
    assert "Traceback" not in err and out == ""


def test_module_entry_point(results_repo: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mae_hlvm.workflow.replay", "--repo", str(results_repo)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("replay-check: OK:")
    done = subprocess.run(
        [sys.executable, "-m", "mae_hlvm.workflow.replay", "--repo", str(results_repo), "--ref", "nope"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_replay_check_is_a_step_of_the_cli(capsys, monkeypatch):
    from mae_hlvm.workflow import cli

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert cli.main(["replay-check", "--table1", "none"]) == 0
    assert "replay-check: OK" in capsys.readouterr().out
    assert cli.main(["replay-check", "--ref", "no-such-revision"]) == 2


def test_a_table_from_before_the_mask_unit_rename_is_compared_under_the_new_name(
    results_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """HEAD's metrics.csv says patch_size (the old name), the working copy mask_unit: same rows, OK."""
    _edit(results_repo, "metrics.csv", "mask_unit", "patch_size")
    _git(results_repo, "commit", "-q", "-am", "results before the rename")
    _edit(results_repo, "metrics.csv", "patch_size", "mask_unit")
    code, out, err = _check(results_repo, capsys)
    assert code == 0, out + err
    old = replay.parse_table("mask_ratio,patch_size,seed,r2_level0\n0.5,4,0,0.1\n", "metrics.csv", "old")
    assert old.columns[:3] == ["mask_ratio", "mask_unit", "seed"] and old.keys == ("mask_ratio", "mask_unit", "seed")

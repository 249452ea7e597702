"""How the artifacts depend on the kind of CPU: the generator and one training cell, run
under emulated CPU kinds on this one machine.

We have one physical CPU, so other kinds are *emulated* by steering each numeric library
onto the code path it would take on another CPU:

- numpy's SIMD loops: ``NPY_DISABLE_CPU_FEATURES`` (drop the AVX-512 loops, or every
  dispatched loop down to numpy's x86-64-v2 baseline);
- OpenBLAS's kernels: ``OPENBLAS_CORETYPE`` (Haswell, Zen, SkylakeX, Cooperlake,
  Sandybridge, Nehalem, Prescott) and ``OPENBLAS_NUM_THREADS``;
- glibc's libm: ``GLIBC_TUNABLES=glibc.cpu.hwcaps=-FMA,...`` (its FMA and non-FMA
  variants of exp, log1p, cos, tanh);
- torch: ``ATEN_CPU_CAPABILITY`` (avx512, avx2, default), oneDNN ``DNNL_MAX_CPU_ISA``,
  MKL ``MKL_CBWR=COMPATIBLE``, and ``train.threads``.

Emulation is not a different physical CPU: MKL's Intel-only code paths, for one, cannot
be reached on an AMD CPU (docs/reproducibility.md).

    python bench/cpu_kinds.py generate [--params params.yaml] [--src label=DIR ...]
    python bench/cpu_kinds.py train [--params params.yaml] [--scale tiny|default]
    python bench/cpu_kinds.py train-real [--ratio 0.75 --unit 8]   (data/real.npz, 4 kinds)
    python bench/cpu_kinds.py report --json bench/results/cpu_kinds_DATE.json --md ...md

``generate`` runs the generator of each source tree (``--src old=/tmp/head/src``) under
every kind and compares the npz bytes and arrays with the native run of the same tree;
``train`` generates one dataset natively, then trains and probes one cell under every
torch kind and compares checkpoint bytes, weights, losses and probe metrics. Both add
their section to ``--json`` (created or updated) and ``report`` writes the Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """This CPU, named from lscpu, and the numeric libraries' own view of it."""
    info: dict[str, Any] = {"platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        out = ""
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("Flags", "").split())
    info.update({
        "model_name": fields.get("Model name", "unknown"),
        "vendor": fields.get("Vendor ID", "unknown"),
        "cpu_family": fields.get("CPU family"),
        "model": fields.get("Model"),
        "cpus": fields.get("CPU(s)"),
        "hypervisor": fields.get("Hypervisor vendor"),
        "isa": {f: f in flags for f in ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512_bf16", "amx_tile")},
    })
    probe = (
        "import json, numpy, torch, threadpoolctl;"
        "from numpy._core._multiarray_umath import __cpu_features__ as f, __cpu_dispatch__ as d;"
        "blas = [i for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'];"
        "print(json.dumps({'numpy': numpy.__version__, 'numpy_dispatch_found': [k for k in d if f.get(k)],"
        "'openblas': [(b.get('version'), b.get('architecture')) for b in blas], 'torch': torch.__version__,"
        "'torch_cpu_capability': torch.backends.cpu.get_cpu_capability(),"
        "'torch_blas': 'mkl' if torch.backends.mkl.is_available() else 'other',"
        "'glibc': __import__('platform').libc_ver()[1], 'python': __import__('platform').python_version()}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    info["libraries"] = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-300:]}
    return info


def numpy_disable(level: str) -> str:
    """NPY_DISABLE_CPU_FEATURES that leaves numpy at x86-64-v3 (``v3``) or its baseline (``v2``)."""
    code = (
        "from numpy._core._multiarray_umath import __cpu_features__ as f, __cpu_dispatch__ as d;"
        "print(' '.join(k for k in d if f.get(k)))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    if level == "v3":
        found = [k for k in found if k != "X86_V3"]
    return " ".join(found)


def generator_kinds() -> dict[str, dict[str, str]]:
    v3, v2 = numpy_disable("v3"), numpy_disable("v2")
    no_fma = "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"
    kinds = {
        "native": {},
        "numpy x86-64-v3 loops (no AVX-512)": {"NPY_DISABLE_CPU_FEATURES": v3},
        "numpy baseline loops (x86-64-v2)": {"NPY_DISABLE_CPU_FEATURES": v2},
    }
    for core in ("Haswell", "Zen", "SkylakeX", "Cooperlake", "Sandybridge", "Nehalem", "Prescott"):
        kinds[f"OpenBLAS {core}"] = {"OPENBLAS_CORETYPE": core}
    kinds["OpenBLAS 1 thread"] = {"OPENBLAS_NUM_THREADS": "1"}
    kinds["glibc without FMA/AVX2"] = {"GLIBC_TUNABLES": no_fma}
    kinds["AVX2-class CPU (numpy v3, OpenBLAS Haswell, glibc no AVX-512)"] = {
        "NPY_DISABLE_CPU_FEATURES": v3, "OPENBLAS_CORETYPE": "Haswell",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F",
    }
    kinds["pre-AVX CPU (numpy v2, OpenBLAS Nehalem, glibc SSE only)"] = {
        "NPY_DISABLE_CPU_FEATURES": v2, "OPENBLAS_CORETYPE": "Nehalem",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-AVX512F",
    }
    return kinds


def torch_kinds() -> dict[str, tuple[dict[str, str], int]]:
    """name -> (environment, train.threads)."""
    v3, v2 = numpy_disable("v3"), numpy_disable("v2")
    return {
        "native (1 thread)": ({}, 1),
        "native, repeated": ({}, 1),
        "native, 2 threads": ({}, 2),
        "torch ATEN_CPU_CAPABILITY=avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, 1),
        "torch ATEN_CPU_CAPABILITY=default": ({"ATEN_CPU_CAPABILITY": "default"}, 1),
        "oneDNN DNNL_MAX_CPU_ISA=AVX2": ({"DNNL_MAX_CPU_ISA": "AVX2"}, 1),
        "MKL_CBWR=COMPATIBLE": ({"MKL_CBWR": "COMPATIBLE"}, 1),
        "OpenBLAS Haswell (probe fits)": ({"OPENBLAS_CORETYPE": "Haswell"}, 1),
        "AVX2-class CPU (all libraries)": ({
            "ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "NPY_DISABLE_CPU_FEATURES": v3,
            "OPENBLAS_CORETYPE": "Haswell", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F",
        }, 1),
        "SSE4.2-class CPU (all libraries)": ({
            "ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE",
            "NPY_DISABLE_CPU_FEATURES": v2, "OPENBLAS_CORETYPE": "Nehalem",
            "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-AVX512F",
        }, 1),
    }


# --------------------------------------------------------------------------- children


def child_env(src: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPY_", "OPENBLAS_", "GLIBC_", "ATEN_", "DNNL_", "MKL_"))}
    env["PYTHONPATH"] = str(Path(src).resolve())
    env.update(extra)
    return env


def run_child(args: list[str], src: str, extra: dict[str, str], cwd: Path, timeout: int = 900) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args], env=child_env(src, extra), cwd=cwd,
        capture_output=True, text=True, timeout=timeout,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_generate(params_path: str, out: str, rng_draws: int) -> dict[str, Any]:
    import numpy as np

    from mae_hlvm.core.config import load_params
    from mae_hlvm.core.data import save_dataset
    from mae_hlvm.synthetic.generate import draw_functions, generate_dataset, sample

    params = load_params(params_path)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        ds = generate_dataset(params.data)
        times.append(time.perf_counter() - t)
    save_dataset(out, ds)
    # The train images in float64, before the float32 cast: where CPU-dependent last bits show first.
    data = params.data
    rng = np.random.default_rng(np.random.SeedSequence(data.seed).spawn(3)[1])
    np.save(out + ".f64.npy", sample(draw_functions(data), data, data.n_train, rng)[0])
    rng = hashlib.sha256(np.random.default_rng(0).standard_normal(rng_draws).tobytes()).hexdigest()
    return {"seconds_best_of_3": round(min(times), 4), "rng_sha256": rng}


def _child_prepare_real(params_path: str, out: str) -> dict[str, Any]:
    from mae_hlvm.core.config import load_params
    from mae_hlvm.real.realdata import run_prepare

    t = time.perf_counter()
    run_prepare(load_params(params_path), argparse.Namespace(out=out))
    return {"seconds": round(time.perf_counter() - t, 3)}


def _child_train(params_path: str, data: str, out_dir: str, ratio: float, unit: int, seed: int) -> dict[str, Any]:
    from mae_hlvm.core.config import load_params
    from mae_hlvm.core.train import train_cell
    from mae_hlvm.synthetic.probe import probe_cell

    params = load_params(params_path)
    t = time.perf_counter()
    train_cell(params, data, ratio, unit, seed, out_dir)
    t_train = time.perf_counter() - t
    ckpt = str(Path(out_dir) / "checkpoint.pt")
    metrics, _, _ = probe_cell(params, data, ckpt)
    return _cell_result(out_dir, metrics, t, t_train)


def _cell_result(out_dir: str, metrics: dict[str, Any], started: float, t_train: float) -> dict[str, Any]:
    """What a child reports for one trained and evaluated cell: byte hashes, numbers, seconds."""
    from mae_hlvm.core.io import file_sha256

    return {
        "checkpoint_sha256": file_sha256(Path(out_dir) / "checkpoint.pt"),
        "train_log_sha256": file_sha256(Path(out_dir) / "train_log.csv"),
        "metrics": metrics,
        "train_seconds": round(t_train, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
    }


def _child_train_real(params_path: str, data: str, out_dir: str, ratio: float, unit: int, seed: int) -> dict[str, Any]:
    from mae_hlvm.core.config import load_params
    from mae_hlvm.core.train import train_cell
    from mae_hlvm.real.evaluate import run_evaluate
    from mae_hlvm.real.train_real import real_train_params

    params = load_params(params_path)
    t = time.perf_counter()
    train_cell(real_train_params(params), data, ratio, unit, seed, out_dir)
    t_train = time.perf_counter() - t
    ckpt = str(Path(out_dir) / "checkpoint.pt")
    out = Path(out_dir) / "eval.json"
    run_evaluate(params, argparse.Namespace(checkpoint=ckpt, data=data, sweep="A", out=str(out)))
    metrics = json.loads(out.read_text())
    metrics.pop("checkpoint_weights_sha256", None)
    return _cell_result(out_dir, metrics, t, t_train)


# --------------------------------------------------------------------------- comparisons


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_npz(a: Path, b: Path) -> dict[str, Any]:
    """Per array: elements that differ and the largest absolute difference."""
    import numpy as np

    out = {}
    with np.load(a) as fa, np.load(b) as fb:
        for name in sorted(set(fa.files) | set(fb.files)):
            if name not in fa.files or name not in fb.files:
                out[name] = {"missing": True}
                continue
            x, y = fa[name], fb[name]
            if x.dtype.kind != "f":
                out[name] = {"equal": bool(np.array_equal(x, y))}
                continue
            diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
            out[name] = {
                "n_differ": int((x != y).sum()), "n": int(x.size),
                "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            }
    return out


def compare_f64(a: Path, b: Path) -> dict[str, Any]:
    """float64 arrays: the share of values that differ at all, the largest difference, and
    how many of them still differ after the cast to float32."""
    import numpy as np

    x, y = np.load(a), np.load(b)
    return {
        "share_differ": float((x != y).mean()),
        "max_abs_diff": float(np.abs(x - y).max()),
        "n_differ_float32": int((x.astype(np.float32) != y.astype(np.float32)).sum()),
        "n": int(x.size),
    }


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """JSON leaves as {"a.b[0]": value}."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def metric_group(path: str) -> str | None:
    """Which kind of number a probe-JSON leaf is; None for the ones not compared."""
    name = path.lower()
    if name.startswith("cell.") or name.endswith(("digest", "reason", "rule")) or ".rules." in name:
        return None
    last = name.rsplit(".", 1)[-1]
    if last in ("mask_ratio", "mask_unit", "n_images", "n_test", "n_train", "seed", "vit_patch", "fsim"):
        return None
    if name.startswith("table1."):
        return "table1_percent"
    if name.startswith("recon_quality."):
        return "psnr" if last == "psnr" else ("ssim" if last == "ssim" else "mse")
    if "r2" in name:
        return "r2"
    if "acc" in name:
        return "accuracy"
    if "mse" in name:
        return "mse"
    if any(k in name for k in ("gain_share", "recon_rel", "linear_rel", "loss_rel_drop")):
        return "gate_ratio"
    return "other"


def compare_metrics(ref: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Max abs and rel difference of probe metrics per group; flips of the gate's booleans."""
    a, b = flatten(ref), flatten(new)
    groups: dict[str, dict[str, float]] = {}
    flips = []
    for key in sorted(set(a) & set(b)):
        x, y = a[key], b[key]
        if isinstance(x, bool) or isinstance(y, bool):
            if x != y:
                flips.append(key)
            continue
        group = metric_group(key)
        if group is None or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
            continue
        g = groups.setdefault(group, {"max_abs": 0.0, "max_rel": 0.0, "n": 0, "n_differ": 0, "worst": ""})
        d = abs(float(x) - float(y))
        rel = d / abs(float(x)) if x else (0.0 if d == 0 else math.inf)
        g["n"] += 1
        g["n_differ"] += int(d > 0)
        if d > g["max_abs"]:
            g["max_abs"], g["worst"] = d, key
        g["max_rel"] = max(g["max_rel"], rel)
    return {"groups": groups, "bool_flips": flips}


def compare_checkpoints(a: Path, b: Path) -> dict[str, float]:
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=True)
    sb = torch.load(b, map_location="cpu", weights_only=True)
    ma, mb = sa["model"], sb["model"]
    worst_abs = worst_rel = 0.0
    for k in ma:
        d = (ma[k].double() - mb[k].double()).abs()
        worst_abs = max(worst_abs, float(d.max()))
        worst_rel = max(worst_rel, float((d / ma[k].double().abs().clamp_min(1e-12)).max()))
    ha = [h["loss"] for h in json.loads(sa["meta_json"])["history"]]
    hb = [h["loss"] for h in json.loads(sb["meta_json"])["history"]]
    loss_abs = max(abs(x - y) for x, y in zip(ha, hb))
    loss_rel = max(abs(x - y) / abs(x) for x, y in zip(ha, hb))
    return {
        "weights_max_abs": worst_abs, "weights_max_rel": worst_rel,
        "loss_max_abs": loss_abs, "loss_max_rel": loss_rel, "final_loss": hb[-1],
    }


# --------------------------------------------------------------------------- parts


# The kinds a real-track cell is run under (it takes a few minutes per kind).
REAL_KINDS = ("native (1 thread)", "native, 2 threads", "AVX2-class CPU (all libraries)", "SSE4.2-class CPU (all libraries)")


def tiny_params(base: Path, out: Path, scale: str, threads: int = 1, real: bool = False) -> Path:
    """params.yaml for the measurement: the repository's, shrunk for ``tiny``."""
    import yaml

    raw = yaml.safe_load(base.read_text())
    raw["real"]["enabled"] = real
    raw["train"]["threads"] = threads
    if scale == "tiny":
        raw["data"].update({"n_train": 600, "n_test": 200})
        raw["train"]["epochs"] = 2
        raw["probe"]["nystroem_components"] = 100
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def part_generate(args: argparse.Namespace) -> dict[str, Any]:
    kinds = generator_kinds()
    out: dict[str, Any] = {"params": str(args.params), "kinds": {k: v for k, v in kinds.items()}, "trees": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        params = tiny_params(Path(args.params), tmp / "params.yaml", "default")
        real_params = tiny_params(Path(args.params), tmp / "params_real.yaml", "default", real=True)
        natives: dict[str, Path] = {}
        for label, src in (s.split("=", 1) for s in args.src):
            rows = {}
            native = native_real = None
            for i, (name, env) in enumerate(kinds.items()):
                npz = tmp / f"{label}_{i}.npz"
                res = run_child(["_generate", str(params), str(npz), str(args.rng_draws)], src, env, tmp)
                if "error" in res:
                    rows[name] = res
                    print(f"[{label}] {name}: {res['error']}", file=sys.stderr)
                    continue
                res["sha256"] = sha256(npz)
                if native is None:
                    native = npz
                    native_rng = res["rng_sha256"]
                res["identical_to_native"] = res["sha256"] == sha256(native)
                res["rng_identical_to_native"] = res.pop("rng_sha256") == native_rng
                res["arrays"] = compare_npz(native, npz)
                res["float64_images"] = compare_f64(Path(str(native) + ".f64.npy"), Path(str(npz) + ".f64.npy"))
                if args.real_check:  # data/real.npz of prepare-real under the same kind
                    real_npz = tmp / f"{label}_{i}_real.npz"
                    rres = run_child(["_prepare_real", str(real_params), str(real_npz)], src, env, tmp)
                    if "error" in rres:
                        res["real"] = rres
                    else:
                        if native_real is None:
                            native_real = real_npz
                        res["real"] = {"identical_to_native": sha256(real_npz) == sha256(native_real),
                                       "arrays": compare_npz(native_real, real_npz)}
                rows[name] = res
                print(f"[{label}] {name}: {'identical' if res['identical_to_native'] else 'DIFFERS'} "
                      f"({res['seconds_best_of_3']} s)", file=sys.stderr)
            out["trees"][label] = {"src": src, "rows": rows}
            if native is not None:
                natives[label] = native
        first = next(iter(natives), None)
        for label, native in natives.items():  # each tree's native data against the first tree's
            if label != first:
                out["trees"][label]["native_vs_" + first] = compare_npz(natives[first], native)
        for f in tmp.glob("*.f64.npy"):
            f.unlink()
    return out


def part_train(args: argparse.Namespace, real: bool = False) -> dict[str, Any]:
    """One cell trained and probed under every torch kind (``real``: a real-track cell,
    trained by train-real and evaluated by evaluate-real on ``--real-data``)."""
    kinds = torch_kinds()
    if real:
        kinds = {k: v for k, v in kinds.items() if k in REAL_KINDS}
    src = args.src[0].split("=", 1)[-1]
    out: dict[str, Any] = {"scale": "real" if real else args.scale,
                           "cell": {"mask_ratio": args.ratio, "mask_unit": args.unit, "seed": 0},
                           "kinds": {k: {"env": e, "threads": t} for k, (e, t) in kinds.items()}, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = tiny_params(Path(args.params), tmp / "params_t1.yaml", args.scale, 1, real=real)
        data = tmp / "data.npz"
        if real:
            data.write_bytes(Path(args.real_data).read_bytes())
        else:
            gen = run_child(["_generate", str(base), str(data), "1"], src, {}, tmp)
            if "error" in gen:
                raise SystemExit(f"generate failed: {gen['error']}")
        out["data_sha256"] = sha256(data)
        native_ckpt, native_metrics = None, None
        for i, (name, (env, threads)) in enumerate(kinds.items()):
            params = tiny_params(Path(args.params), tmp / f"params_t{threads}.yaml", args.scale, threads, real=real)
            out_dir = tmp / f"cell{i}"
            res = run_child(
                ["_train_real" if real else "_train", str(params), str(data), str(out_dir), str(args.ratio),
                 str(args.unit), "0"], src, env, tmp,
            )
            if "error" in res:
                out["rows"][name] = res
                print(f"{name}: {res['error']}", file=sys.stderr)
                continue
            ckpt = out_dir / "checkpoint.pt"
            metrics = res.pop("metrics")
            if native_ckpt is None:
                native_ckpt, native_metrics, native_sha = ckpt, metrics, res["checkpoint_sha256"]
                out["native_metrics"] = metrics
            res["checkpoint_identical"] = res["checkpoint_sha256"] == native_sha
            res.update(compare_checkpoints(native_ckpt, ckpt))
            res.update(compare_metrics(native_metrics, metrics))
            out["rows"][name] = res
            g = res["groups"]
            print(f"{name}: ckpt {'identical' if res['checkpoint_identical'] else 'differs'}, loss rel "
                  f"{res['loss_max_rel']:.2e}, r2 abs {g.get('r2', {}).get('max_abs', 0):.2e}, "
                  f"mse rel {g.get('mse', {}).get('max_rel', 0):.2e}, acc abs {g.get('accuracy', {}).get('max_abs', 0):.3f} "
                  f"({res['total_seconds']} s)", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- report


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def _real_cell(row: dict[str, Any]) -> str:
    real = row.get("real")
    if real is None:
        return "not run"
    if "error" in real:
        return f"error: {real['error']}"
    return "yes" if real["identical_to_native"] else "**no**"


def render_md(res: dict[str, Any]) -> str:
    m = res["machine"]
    lib = m.get("libraries", {})
    lines = [
        f"# Artifacts across emulated CPU kinds ({res['date']})",
        "",
        f"Machine: **{m['model_name']}** ({m['vendor']}, family {m['cpu_family']} model {m['model']}, "
        f"{m['cpus']} vCPUs under {m.get('hypervisor') or 'no hypervisor'}; AVX-512: {m['isa']['avx512f']}, "
        f"AVX2: {m['isa']['avx2']}, FMA: {m['isa']['fma']}). numpy {lib.get('numpy')} (dispatch found: "
        f"{', '.join(lib.get('numpy_dispatch_found', []))}), OpenBLAS {lib.get('openblas')}, torch "
        f"{lib.get('torch')} (capability {lib.get('torch_cpu_capability')}, BLAS {lib.get('torch_blas')}), "
        f"glibc {lib.get('glibc')}, Python {lib.get('python')}.",
        "",
        "Other CPU kinds are **emulated** on this one CPU by forcing each library onto the code path it "
        "takes elsewhere (`bench/cpu_kinds.py` docstring); that is not a different physical CPU. "
        "Produced by `python bench/cpu_kinds.py generate|train|report`.",
        "",
    ]
    gen = res.get("generate")
    if gen:
        lines += ["## Generator (`data/synthetic.npz`, default params: 3000 + 1000 images)", ""]
        for label, tree in gen["trees"].items():
            lines += [f"### `{label}` generator ({tree['src']})", "",
                      "| kind | npz identical to native | float32 values that differ (images / latents) | "
                      "max abs diff | float64 train images that differ before the cast (share, max abs) | "
                      "random draws identical | generate_dataset s (best of 3) | `data/real.npz` (prepare-real) identical |",
                      "|---|---|---|---|---|---|---|---|"]
            for name, row in tree["rows"].items():
                if "error" in row:
                    lines.append(f"| {name} | error: {row['error']} | | | | | | |")
                    continue
                arr = row["arrays"]
                img = arr["images"]["n_differ"]
                lat = sum(v.get("n_differ", 0) for k, v in arr.items() if k.startswith("latents"))
                mx = max(v.get("max_abs_diff", 0.0) for v in arr.values())
                f64 = row["float64_images"]
                lines.append(
                    f"| {name} | {'yes' if row['identical_to_native'] else '**no**'} | {img} / {lat} | {_fmt(mx)} | "
                    f"{f64['share_differ']:.1%}, {_fmt(f64['max_abs_diff'])} | "
                    f"{'yes' if row['rng_identical_to_native'] else '**no**'} | {row['seconds_best_of_3']:.3f} | "
                    f"{_real_cell(row)} |"
                )
            lines.append("")
            for key, cmp in tree.items():
                if key.startswith("native_vs_"):
                    other = key[len("native_vs_"):]
                    n_img, n_all = cmp["images"]["n_differ"], sum(v.get("n_differ", 0) for v in cmp.values())
                    mx = max(v.get("max_abs_diff", 0.0) for v in cmp.values())
                    lines.append(f"Native `{label}` data against native `{other}` data: image values that differ: {n_img}, "
                                 f"latent values that differ: {n_all - n_img} (max abs {_fmt(mx)}).")
            lines.append("")
    groups = (("r2", "max_abs", "R^2 max abs"), ("mse", "max_rel", "MSE max rel"),
              ("accuracy", "max_abs", "accuracy max abs"), ("gate_ratio", "max_abs", "gate ratios max abs"),
              ("table1_percent", "max_abs", "Table 1 % max abs"), ("psnr", "max_abs", "PSNR dB max abs"),
              ("ssim", "max_abs", "SSIM max abs"))
    titles = {"train_tiny": "synthetic track, tiny scale (600 + 200 images, 2 epochs)",
              "train_default": "synthetic track, default params (3000 + 1000 images, 4 epochs)",
              "train_real": "real track (MNIST, default `real:` params: 3000 + 500 images, 6 epochs, 30 probe epochs)"}
    for key in ("train_tiny", "train_default", "train_real"):
        tr = res.get(key)
        if not tr:
            continue
        present = [g for g in groups if any(g[0] in r.get("groups", {}) for r in tr["rows"].values())]
        cell = tr["cell"]
        lines += [
            f"## One cell, {titles[key]}: r{cell['mask_ratio']}_p{cell['mask_unit']}_s0", "",
            f"The same data file for every kind (sha256 {tr['data_sha256'][:12]}). Differences against the "
            "native 1-thread run; metrics are rounded as in `results/` (6 decimals; Table 1 to 0.1 %), "
            "so the smallest nonzero difference is one rounding step.", "",
            "| kind | checkpoint identical | weights max abs | loss max rel | "
            + " | ".join(g[2] for g in present) + " | gate flips | s |",
            "|---|---|---|---|" + "---|" * len(present) + "---|---|",
        ]
        for name, row in tr["rows"].items():
            if "error" in row:
                lines.append(f"| {name} | error: {row['error']} |" + " |" * (len(present) + 4))
                continue
            g = row["groups"]
            cells = [_fmt(g.get(k, {}).get(stat, 0)) for k, stat, _ in present]
            lines.append(
                f"| {name} | {'yes' if row['checkpoint_identical'] else 'no'} | {_fmt(row['weights_max_abs'])} | "
                f"{_fmt(row['loss_max_rel'])} | " + " | ".join(cells)
                + f" | {', '.join(row['bool_flips']) or 'none'} | {row['total_seconds']} |"
            )
        lines.append("")
    if res.get("notes"):
        lines += ["## Notes", "", *res["notes"], ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_generate":
        print(json.dumps(_child_generate(argv[1], argv[2], int(argv[3]))))
        return 0
    if argv and argv[0] == "_prepare_real":
        print(json.dumps(_child_prepare_real(argv[1], argv[2])))
        return 0
    if argv and argv[0] in ("_train", "_train_real"):
        child = _child_train if argv[0] == "_train" else _child_train_real
        print(json.dumps(child(argv[1], argv[2], argv[3], float(argv[4]), int(argv[5]), int(argv[6]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["generate", "train", "train-real", "report"])
    ap.add_argument("--real-data", default=str(REPO / "data" / "real.npz"), help="train-real: the prepared real data")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--src", action="append", default=None, help="label=DIR of a source tree (repeatable)")
    ap.add_argument("--scale", choices=["tiny", "default"], default="tiny")
    ap.add_argument("--ratio", type=float, default=0.75)
    ap.add_argument("--unit", type=int, default=4)
    ap.add_argument("--rng-draws", type=int, default=10_000_000)
    ap.add_argument("--real-check", action="store_true", help="generate: also run prepare-real under every kind")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--json", default=None, help="results file to create or update")
    ap.add_argument("--md", default=None, help="Markdown report (report part)")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's Notes (repeatable)")
    args = ap.parse_args(argv)
    args.src = args.src or [f"new={REPO / 'src'}"]
    path = Path(args.json) if args.json else None
    res: dict[str, Any] = json.loads(path.read_text()) if path and path.exists() else {}
    res.setdefault("date", args.date)
    if args.part != "report" or "machine" not in res:
        res["machine"] = machine()
    res["notes"] = res.get("notes", []) + args.note
    if args.part == "generate":
        res["generate"] = part_generate(args)
    elif args.part == "train":
        res[f"train_{args.scale}"] = part_train(args)
    elif args.part == "train-real":
        res["train_real"] = part_train(args, real=True)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2) + "\n")
    if args.md:
        Path(args.md).write_text(render_md(res))
    elif args.part == "report":
        print(render_md(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

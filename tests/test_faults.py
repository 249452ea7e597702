"""Faults: a killed job, a damaged input, an unwritable or full disk. None may leave a
finished-looking output, and each gets one line naming the problem."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mae_hlvm.core.data import load_dataset
from mae_hlvm.core.io import ArtifactError, write_text
from mae_hlvm.core.train import resume_state_path


@pytest.fixture
def workdir(tiny_workdir):
    """Tiny params and a dataset big enough that one epoch takes a moment."""
    return tiny_workdir(
        2400, 2000,
        data=dict(image_size=8, depth=1, latent_dims=[4, 4], noise_scales=[1.0, 1.0]),
        model=dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2),
        train=dict(epochs=4, batch_size=16, base_lr=1e-3),
        grid=dict(mask_units=[2, 4], mask_ratios=[0.5]),
    )


def train_cmd(out_dir: str, data: str = "data.npz") -> list[str]:
    return [sys.executable, "-m", "mae_hlvm", "train", "--data", data, "--mask-ratio", "0.5",
            "--mask-unit", "2", "--seed", "0", "--out-dir", out_dir]


def test_killed_training_leaves_nothing_finished_and_resumes_to_identical_bytes(workdir):
    subprocess.run(train_cmd("full"), check=True, capture_output=True)
    job = subprocess.Popen(train_cmd("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = resume_state_path("killed")
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    assert resume.exists(), "no end-of-epoch state was written before the kill"
    job.send_signal(signal.SIGKILL)  # mid-epoch: no handler, no cleanup
    job.wait()
    assert not Path("killed/checkpoint.pt").exists() and not Path("killed/train_log.csv").exists()
    leftovers = [p.name for p in Path("killed").glob("*")] if Path("killed").exists() else []
    assert all(name.startswith(".") and name.endswith(".tmp") for name in leftovers)
    subprocess.run(train_cmd("killed"), check=True, capture_output=True)
    for name in ("checkpoint.pt", "train_log.csv"):
        assert Path("killed", name).read_bytes() == Path("full", name).read_bytes()
    assert not resume.exists()


def test_truncated_dataset_is_named_before_training(workdir):
    blob = Path("data.npz").read_bytes()
    Path("cut.npz").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ArtifactError, match=r"cut\.npz: corrupt or truncated"):
        load_dataset("cut.npz")
    proc = subprocess.run(train_cmd("out", data="cut.npz"), capture_output=True, text=True)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "error: cut.npz: corrupt or truncated" in last
    assert not Path("out").exists()


def test_unwritable_destination_is_one_clear_error(workdir):
    Path("blocker").write_text("a file where a folder should be")
    with pytest.raises(ArtifactError, match=r"blocker/sub/x\.txt: cannot write here"):
        write_text("blocker/sub/x.txt", "hello")
    proc = subprocess.run(
        [sys.executable, "-m", "mae_hlvm", "generate", "--out", "blocker/data.npz"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "blocker/data.npz: cannot write here" in proc.stderr.strip().splitlines()[-1]


def test_full_disk_is_named_and_leaves_no_partial_file(workdir, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(ArtifactError, match=r"out/x\.txt: no space left on device"):
        write_text("out/x.txt", "hello")
    assert list(Path("out").iterdir()) == []

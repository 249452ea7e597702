"""Writing artifacts so that they are byte-identical run to run and never half-written.

Every file a step produces goes through :func:`atomic_path`: it is written under a
temporary name in the same folder and renamed into place only when complete, so an
interrupted job leaves nothing that either Snakemake or DVC could take for finished.
The file is fsynced before the rename and its folder after it, so this holds after a
power cut too, not only after a killed process. Every read is checked against the hash
recorded for the file, by the check the workflow installs (:func:`set_recorded_check`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


class ArtifactError(RuntimeError):
    """A missing, truncated, corrupt or unwritable artifact, named in one line."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success only."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise ArtifactError(f"{path}: cannot write here ({err.strerror})") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        _fsync(tmp_path)  # the bytes are on disk before the name points at them
        os.replace(tmp_path, path)
        _fsync(path.parent)  # and the rename itself survives a power cut
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise ArtifactError(f"{path}: no space left on device") from None
        raise ArtifactError(f"{path}: cannot write ({err.strerror})") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, fixed float repr, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=True) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, dumps_json(obj))


# The hashes recorded for the artifacts are the workflow's (dvc.lock and Snakemake's
# receipts), so the workflow installs their check: the command line does, before any step
# runs (mae_hlvm.workflow.ledger.check). Without it (the steps' code used on its own,
# outside a pipeline working copy) nothing is checked.
_recorded_check: Callable[[str | Path], None] | None = None


def set_recorded_check(check: Callable[[str | Path], None] | None) -> None:
    """Check every artifact read from now on with ``check(path)`` (raising ArtifactError); None: no check."""
    global _recorded_check
    _recorded_check = check


def check_recorded(path: str | Path) -> None:
    """Refuse an artifact whose bytes differ from the hash recorded for it (the installed check)."""
    if _recorded_check is not None:
        _recorded_check(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        check_recorded(path)
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (run the step that makes it first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"{path}: corrupt or truncated JSON") from None


# np.savez stamps each member with the current time; a fixed stamp keeps bytes stable.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Deterministic, atomic, compressed ``.npz`` (members in sorted name order)."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())


def load_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz``; a missing, truncated or corrupt file is one clear error."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: missing (run the step that makes it first)")
    check_recorded(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ArtifactError(f"{path}: corrupt or truncated ({err.__class__.__name__})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ArtifactError(f"{path}: lacks arrays {missing}; was it made by another version?")
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

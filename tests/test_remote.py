"""DVC remotes: the shipped config writes nothing outside the working copy, a missing or
unreachable remote is one line (``python -m mae_hlvm.workflow.remote``), and an S3 remote restores a
run byte for byte in a fresh clone.

S3 is an S3-compatible server on localhost: moto in server mode, started in this process on
a free port, with fake credentials. The fast tests use a three-file DVC repository (``dvc
add``, no pipeline); the ``slow`` test runs the tiny pipeline with Snakemake, pushes it to
the server, and pulls it into fresh clones, measuring push and pull.
"""

from __future__ import annotations

import configparser
import filecmp
import logging
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    GIT,
    REPO,
    assert_agree_up_to_date,
    commit,
    copy_repo,
    edit_params,
    init_repo,
    sh,
    tiny_params,
    tracked_outputs,
)

BUCKET = "mae-hlvm-test"
REMOTE = "mae_hlvm.workflow.remote"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def s3_endpoint():
    """URL of an S3-compatible server (moto) on a free localhost port, for this module."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as err:  # pragma: no cover - the lock installs it
        pytest.fail(f"moto is not installed ({err}): pip install -r requirements.lock")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials in the environment, and none of this machine's own AWS setup."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


def new_bucket(endpoint: str, name: str) -> str:
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def objects_under(endpoint: str, bucket: str, prefix: str) -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def add_s3_remote(root: Path, url: str, endpoint: str, name: str = "store") -> None:
    """The remote in ``.dvc/config.local`` (git-ignored), as its docs/remotes.md commands do."""
    sh(root, "dvc", "remote", "add", "--local", "-d", "-f", name, url)
    sh(root, "dvc", "remote", "modify", "--local", name, "endpointurl", endpoint)


def wrapper(root: Path, *args: str):
    """``python -m mae_hlvm.workflow.remote ARGS`` in ``root``: (exit status, stdout, stderr lines)."""
    proc = sh(root, sys.executable, "-m", REMOTE, *args, check=False)
    return proc.returncode, proc.stdout, [ln for ln in proc.stderr.splitlines() if ln.strip()]


def one_line(lines: list[str]) -> str:
    assert len(lines) == 1, "expected one line on stderr, got:\n" + "\n".join(lines)
    assert lines[0].startswith(f"{REMOTE}: ")
    return lines[0]


def mini_repo(root: Path, shipped_config: bool = False) -> Path:
    """A git + DVC repository with three tracked files (one DVC-added folder, one file); its
    ``.dvc/config`` is ``dvc init``'s (no remote) or, with ``shipped_config``, this repository's."""
    root.mkdir(parents=True)
    sh(root, *GIT, "init", "-q")
    sh(root, "dvc", "init", "-q")
    if shipped_config:
        shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    (root / "d").mkdir()
    (root / "d" / "a.txt").write_text("a\n")
    (root / "d" / "b.txt").write_text("b\n")
    (root / "c.txt").write_text("c\n")
    sh(root, "dvc", "add", "-q", "d", "c.txt")
    commit(root, "data")
    return root


def clone(src: Path, dest: Path) -> Path:
    sh(src.parent, *GIT, "clone", "-q", str(src), str(dest))
    return dest


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def committed_remotes(config: Path) -> tuple[str | None, dict[str, str]]:
    """(core.remote, {name: url}) of a DVC config file."""
    parser = configparser.ConfigParser()
    parser.read(config)
    remotes = {}
    for section in parser.sections():
        head = section.strip("'\"")
        if head.startswith("remote "):
            remotes[head.split('"')[1]] = parser[section].get("url", "")
    core = parser["core"] if parser.has_section("core") else {}
    return core.get("remote"), remotes


# ----------------------------------------------------------------------------- fast: the shipped default


def test_shipped_config_names_no_remote_outside_the_working_copy():
    """A remote path is resolved against .dvc/, and `dvc push` creates it: a shipped folder
    outside the repository would be written beside the clone, and exists on no other machine."""
    _, remotes = committed_remotes(REPO / ".dvc" / "config")
    for name, url in remotes.items():
        if "://" in url and not url.startswith("file://"):
            continue
        path = (REPO / ".dvc" / url.removeprefix("file://")).resolve()
        assert path.is_relative_to(REPO), f".dvc/config: remote '{name}' = {url} is {path}, outside the working copy"


def test_fresh_clone_of_the_shipped_config_is_one_line(tmp_path):
    origin = mini_repo(tmp_path / "origin", shipped_config=True)
    work = clone(origin, tmp_path / "clone")
    code, _, err = wrapper(work, "pull")
    line = one_line(err)
    assert code == 2
    assert "no DVC remote configured" in line and "make run" in line and "11-14 min" in line
    assert "dvc remote add --local -d store s3://BUCKET/PATH" in line
    assert not (work / "d").exists()  # nothing pulled, nothing half-written


def test_unknown_and_not_default_remote(tmp_path):
    origin = mini_repo(tmp_path / "origin")
    sh(origin, "dvc", "remote", "add", "--local", "other", str(tmp_path / "elsewhere"))
    code, _, err = wrapper(origin, "check", "-r", "nosuch")
    assert code == 2 and "no DVC remote named 'nosuch' (configured: other)" in one_line(err)
    code, _, err = wrapper(origin, "check")
    assert code == 2 and "no default DVC remote (configured: other)" in one_line(err)


# ----------------------------------------------------------------------------- fast: a shared folder


def test_folder_remote_missing_then_incomplete_then_complete(tmp_path):
    origin = mini_repo(tmp_path / "origin")
    store = tmp_path / "shared" / "store"
    sh(origin, "dvc", "remote", "add", "--local", "-d", "store", str(store))
    work = clone(origin, tmp_path / "clone")
    sh(work, "dvc", "remote", "add", "--local", "-d", "store", str(store))

    # the folder does not exist (never pushed, or not mounted here)
    code, _, err = wrapper(work, "pull")
    line = one_line(err)
    assert code == 3 and f"is the folder {store}, which does not exist on this machine" in line and "make run" in line
    assert not store.exists()  # checking creates nothing

    # pushed in part: the clone is told how many files the remote lacks, and which
    sh(origin, "dvc", "push", "-q", "d")
    code, _, err = wrapper(work, "pull")
    line = one_line(err)
    assert code == 4 and "lacks 1 of the 3 tracked files this clone needs (c.txt)" in line
    assert "dvc push -r store" in line
    assert not (work / "d").exists()

    # pushed in full: check passes and says how much a pull brings
    sh(origin, "dvc", "push", "-q")
    code, out, err = wrapper(work, "check")
    assert code == 0 and err == [] and "holds all 3 tracked files this clone lacks" in out


def test_stray_remote_options_are_one_line(tmp_path):
    """`dvc remote remove` leaves options set with --local behind: DVC then rejects its config."""
    origin = mini_repo(tmp_path / "origin")
    (origin / ".dvc" / "config.local").write_text("['remote \"store\"']\n    endpointurl = http://127.0.0.1:9\n")
    code, _, err = wrapper(origin, "check")
    assert code == 2 and "DVC's configuration is invalid" in one_line(err)


# ----------------------------------------------------------------------------- fast: S3


def test_s3_unreachable_endpoint_is_one_line_and_quick(tmp_path, aws_env):
    origin = mini_repo(tmp_path / "origin")
    add_s3_remote(origin, f"s3://{BUCKET}/x", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    code, _, err = wrapper(origin, "pull", "--timeout", "2")
    assert code == 3 and "cannot reach remote 'store' at http://127.0.0.1:" in one_line(err)
    assert time.monotonic() - start < 30


def test_s3_bucket_credentials_and_contents(tmp_path, aws_env, monkeypatch, s3_endpoint):
    origin = mini_repo(tmp_path / "origin")
    work = clone(origin, tmp_path / "clone")
    bucket = f"{BUCKET}-fast"
    url = f"s3://{bucket}/dvc"
    for root in (origin, work):
        add_s3_remote(root, url, s3_endpoint)

    # no such bucket
    code, _, err = wrapper(work, "check")
    assert code == 3 and f"bucket '{bucket}' does not exist at {s3_endpoint}" in one_line(err)

    # the bucket, part of the data: counted and named
    new_bucket(s3_endpoint, bucket)
    sh(origin, "dvc", "push", "-q", "c.txt")
    code, _, err = wrapper(work, "check")
    assert code == 4 and "lacks 2 of the 3 tracked files this clone needs (d/ (2 files))" in one_line(err)

    sh(origin, "dvc", "push", "-q")
    assert len(objects_under(s3_endpoint, bucket, "dvc/")) == 4  # 3 files + the folder's listing
    code, out, err = wrapper(work, "check")
    assert code == 0 and "bucket answers; it holds all 3 tracked files" in out

    # no credentials anywhere: one line naming both ways to give them
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, _, err = wrapper(work, "check")
    line = one_line(err)
    assert code == 3 and "no S3 credentials for remote 'store'" in line and "dvc remote modify --local store" in line
    # credentials in the clone's local (git-ignored) config are used, by the check and by DVC
    sh(work, "dvc", "remote", "modify", "--local", "store", "access_key_id", "testing")
    sh(work, "dvc", "remote", "modify", "--local", "store", "secret_access_key", "testing")
    code, out, err = wrapper(work, "check")
    assert code == 0 and "holds all 3" in out
    sh(work, "dvc", "pull", "-q")
    for rel in ("c.txt", "d/a.txt", "d/b.txt"):
        assert filecmp.cmp(origin / rel, work / rel, shallow=False)
    assert "config.local" in (work / ".dvc" / ".gitignore").read_text()  # the keys never reach git


# ----------------------------------------------------------------------------- slow: a whole run through S3


@pytest.mark.slow
def test_s3_remote_replays_a_run_in_fresh_clones(tmp_path, aws_env, s3_endpoint):
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    edit_params(root, stability__enabled=False)  # both tracks, without the longest jobs (CI time)
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    init_repo(root)
    bucket = new_bucket(s3_endpoint, f"{BUCKET}-run")
    url = f"s3://{bucket}/mae-hlvm"
    add_s3_remote(root, url, s3_endpoint)

    sh(root, "snakemake", "--cores", "2")
    assert_agree_up_to_date(root)
    commit(root, "results")
    outputs = tracked_outputs(root)
    assert any(rel.startswith("results/real/") for rel in outputs)

    start = time.monotonic()
    pushed = sh(root, "dvc", "push", "-r", "store")
    push_s = time.monotonic() - start
    n_pushed = int(re.search(r"(\d+) files? pushed", pushed.stdout + pushed.stderr).group(1))
    assert n_pushed == len(objects_under(s3_endpoint, bucket, "mae-hlvm/")) > 0
    # pushing again sends nothing
    again = sh(root, "dvc", "push", "-r", "store")
    assert "Everything is up to date" in again.stdout + again.stderr

    # a fresh clone: the remote goes in its local config, then dvc pull and make sync
    first = clone(root, tmp_path / "clone1")
    add_s3_remote(first, url, s3_endpoint)
    start = time.monotonic()
    sh(first, "dvc", "pull", "-r", "store")
    pull_s = time.monotonic() - start
    for rel in outputs:
        assert filecmp.cmp(root / rel, first / rel, shallow=False), f"{rel} differs after dvc pull"
    sh(first, sys.executable, "-m", "mae_hlvm.workflow.sync")
    assert_agree_up_to_date(first)  # snakemake -n: nothing to do; dvc status: clean

    # another fresh clone, through the wrapper (`make pull`): check, pull and sync in one
    second = clone(root, tmp_path / "clone2")
    add_s3_remote(second, url, s3_endpoint)
    start = time.monotonic()
    code, out, err = wrapper(second, "pull")
    wrapped_s = time.monotonic() - start
    assert code == 0, "\n".join(err)
    assert "bucket answers" in out and "pulled from 'store'" in out
    for rel in outputs:
        assert filecmp.cmp(root / rel, second / rel, shallow=False), f"{rel} differs after make pull"
    assert_agree_up_to_date(second)

    print(
        f"\nS3 (moto on localhost): {len(outputs)} outputs, {n_pushed} objects pushed (the rest is in git); "
        f"dvc push {push_s:.1f} s, dvc pull {pull_s:.1f} s, python -m {REMOTE} pull (check+pull+sync) {wrapped_s:.1f} s"
    )

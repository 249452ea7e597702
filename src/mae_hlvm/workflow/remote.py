"""Restore the pipeline's artifacts from a DVC remote, or say in one line why it cannot.

``dvc pull`` restores only what was pushed to a remote this machine can reach. A fresh
clone has no remote configured (``.dvc/config`` sets none: a default that points at a
folder on the author's machine fails on every other one, and ``dvc push`` would create
that folder outside the working copy). Run on its own, ``dvc pull`` then fails with one
"Missing cache file" line per artifact; this wrapper checks first, in order:

1. a remote is configured (``-r NAME``, else DVC's default remote, any config level);
2. it is reachable: a local folder exists; an ``s3://`` bucket answers a HEAD request
   (endpoint, region, profile and keys read from the remote's DVC config, botocore's usual
   environment variables otherwise) within ``--timeout`` seconds. Other kinds of remote
   (gs, azure, ssh, ...) are left to step 3;
3. it holds every tracked file this clone's cache lacks (``dvc status -c``);

then runs ``dvc pull -r NAME`` and ``python -m mae_hlvm.workflow.sync`` (``make sync``), which
re-stamps the pulled outputs so that Snakemake sees them as up to date too.

Usage: ``python -m mae_hlvm.workflow.remote [pull|check] [-r NAME] [--timeout S]`` (``make pull``).
``check`` does steps 1-3 only. Exit status: 0 done; 2 no remote configured (or no such
remote); 3 remote unreachable; 4 remote lacks files; 1 ``dvc pull`` or the sync failed.
Every refusal is one line on stderr. docs/remotes.md has the setup commands.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from urllib.parse import urlsplit

PROG = "mae_hlvm.workflow.remote"
# measured: the default run's 90 Snakemake jobs took 12.3 min (2026-11-26) and 13.8 min (2026-11-27)
# on the 2-core AMD EPYC (README Quickstart, where each number comes from)
REBUILD = "rebuild everything here with `make run` (about 11-14 min on 2 CPU cores; README Quickstart)"
SET_REMOTE = "`dvc remote add --local -d store s3://BUCKET/PATH` (docs/remotes.md)"

NO_REMOTE, UNREACHABLE, INCOMPLETE, FAILED = 2, 3, 4, 1


class RemoteError(Exception):
    """A refusal: ``code`` is the exit status, ``str(self)`` the one line printed."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- step 1


def dvc_remotes() -> tuple[str | None, dict[str, dict]]:
    """(default remote name or None, {name: its merged config}) from every config level."""
    from dvc.config import ConfigError
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        with Repo() as repo:  # from the current directory up; relative urls come back absolute
            conf = repo.config
            return conf["core"].get("remote"), {name: dict(c) for name, c in conf["remote"].items()}
    except NotDvcRepoError as err:
        raise RemoteError(NO_REMOTE, f"not inside a DVC repository ({os.getcwd()})") from err
    except ConfigError as err:  # e.g. a remote left with options but no url in .dvc/config.local
        raise RemoteError(NO_REMOTE, f"DVC's configuration is invalid: {err}") from err


def choose_remote(name: str | None, default: str | None, remotes: dict[str, dict]) -> str:
    if name is not None:
        if name not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            raise RemoteError(NO_REMOTE, f"no DVC remote named '{name}' (configured: {known}); set one with {SET_REMOTE}")
        return name
    if default is None:
        if remotes:
            raise RemoteError(
                NO_REMOTE,
                f"no default DVC remote (configured: {', '.join(sorted(remotes))}): pass -r NAME, "
                "or `dvc remote default --local NAME`",
            )
        raise RemoteError(
            NO_REMOTE,
            f"no DVC remote configured, so `dvc pull` can restore nothing in this clone: {REBUILD}, "
            f"or set the remote the results were pushed to: {SET_REMOTE}",
        )
    if default not in remotes:
        raise RemoteError(NO_REMOTE, f"the default DVC remote '{default}' is not defined; set it with {SET_REMOTE}")
    return default


# ----------------------------------------------------------------------------- step 2


def local_path(url: str) -> str | None:
    """The folder of a local remote, or None for any other kind."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return parts.path
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):  # a path, C:\... included
        return url
    return None


def probe(name: str, conf: dict, timeout: float) -> str:
    """Raise RemoteError(3) when the remote is certainly unreachable; return how it was checked."""
    url = conf["url"]
    path = local_path(url)
    if path is not None:
        if not os.path.isdir(path):
            raise RemoteError(
                UNREACHABLE,
                f"remote '{name}' is the folder {path}, which does not exist on this machine "
                f"(a remote holds only what was pushed into it): {REBUILD}, or point '{name}' at a "
                f"folder or store you can reach: `dvc remote modify --local {name} url URL`",
            )
        return "folder exists"
    if urlsplit(url).scheme == "s3":
        return probe_s3(name, conf, timeout)
    return "not probed (checked by dvc status -c)"


def probe_s3(name: str, conf: dict, timeout: float) -> str:
    if importlib.util.find_spec("dvc_s3") is None or importlib.util.find_spec("botocore") is None:
        raise RemoteError(
            UNREACHABLE,
            f"remote '{name}' is on S3 but DVC's S3 support is not installed: `pip install -r requirements-s3.txt`",
        )
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ProfileNotFound,
        ReadTimeoutError,
    )

    parts = urlsplit(conf["url"])
    bucket = parts.netloc
    endpoint = conf.get("endpointurl")
    where = f"{endpoint} (s3://{bucket})" if endpoint else f"s3://{bucket}"
    # the same files DVC's S3 filesystem would read
    for key, env in (("credentialpath", "AWS_SHARED_CREDENTIALS_FILE"), ("configpath", "AWS_CONFIG_FILE")):
        if conf.get(key):
            os.environ[env] = str(conf[key])
    options = {"connect_timeout": timeout, "read_timeout": timeout, "retries": {"max_attempts": 1, "mode": "standard"}}
    if conf.get("allow_anonymous_login"):
        options["signature_version"] = UNSIGNED
    verify = conf.get("ssl_verify", True)
    try:
        session = botocore.session.Session(profile=conf.get("profile"))  # what DVC's s3fs builds on
        client = session.create_client(
            "s3",
            endpoint_url=endpoint,
            region_name=conf.get("region") or session.get_config_variable("region") or "us-east-1",
            aws_access_key_id=conf.get("access_key_id"),
            aws_secret_access_key=conf.get("secret_access_key"),
            aws_session_token=conf.get("session_token"),
            use_ssl=conf.get("use_ssl", True),
            verify=verify if isinstance(verify, (bool, str)) else True,
            config=Config(**options),
        )
        client.head_bucket(Bucket=bucket)
    except ProfileNotFound as err:
        raise RemoteError(UNREACHABLE, f"remote '{name}': {err}") from err
    except NoCredentialsError as err:
        raise RemoteError(
            UNREACHABLE,
            f"no S3 credentials for remote '{name}': export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            f"or `dvc remote modify --local {name} access_key_id ...` (and secret_access_key)",
        ) from err
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as err:
        raise RemoteError(UNREACHABLE, f"cannot reach remote '{name}' at {where} within {timeout:g} s: {err}") from err
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or status == 404:
            raise RemoteError(UNREACHABLE, f"remote '{name}': bucket '{bucket}' does not exist at {where}") from err
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            raise RemoteError(
                UNREACHABLE, f"remote '{name}': access to bucket '{bucket}' at {where} denied: check its credentials"
            ) from err
        raise RemoteError(UNREACHABLE, f"remote '{name}' at {where}: {code or status}: {err}") from err
    except BotoCoreError as err:
        raise RemoteError(UNREACHABLE, f"remote '{name}' at {where}: {err}") from err
    return "bucket answers"


# ----------------------------------------------------------------------------- step 3


def dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def last_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]


def needed_files(name: str) -> tuple[int, int, list[str]]:
    """How many tracked files this clone's cache lacks, how many of those the remote lacks
    too, and the names of the latter (a folder stands for all of its files)."""
    proc = dvc("status", "--cloud", "--remote", name, "--json")
    if proc.returncode != 0:
        raise RemoteError(UNREACHABLE, f"remote '{name}': `dvc status -c` failed: {last_error(proc)}")
    status = json.loads(proc.stdout or "{}")
    # "deleted": in the remote only; "missing": in neither; "new": in the local cache only
    needed = sum(state in ("deleted", "missing") for state in status.values())
    absent = sorted(path for path, state in status.items() if state == "missing")
    n_absent = len(absent)
    # a folder whose listing (.dir object) is in neither place cannot be expanded into files:
    # DVC only warns "Missing cache files: name: None, md5: <hash>.dir"; its files count too
    for folder, nfiles in unlisted_folders(re.findall(r"md5: ([0-9a-f]+\.dir)", proc.stderr)):
        needed += max(nfiles, 1)
        n_absent += max(nfiles, 1)
        absent.append(f"{folder}/ ({nfiles} files)")
    return needed, n_absent, absent


def unlisted_folders(dir_hashes: list[str]) -> list[tuple[str, int]]:
    """(path, number of files recorded in dvc.lock / .dvc) of the outputs with these .dir hashes."""
    if not dir_hashes:
        return []
    from dvc.repo import Repo

    found = []
    with Repo() as repo:
        for out in repo.index.outs:
            if out.hash_info and out.hash_info.value in dir_hashes:
                found.append((os.path.relpath(out.fs_path, repo.root_dir), int(out.meta.nfiles or 0)))
    return sorted(set(found))


def check(name: str | None, timeout: float) -> tuple[str, int]:
    """Steps 1-3: the remote's name and how many files a pull would bring; RemoteError if it cannot."""
    default, remotes = dvc_remotes()
    name = choose_remote(name, default, remotes)
    url = remotes[name]["url"]
    how = probe(name, remotes[name], timeout)
    needed, n_absent, absent = needed_files(name)
    if n_absent:
        examples = ", ".join(absent[:3]) + (", ..." if len(absent) > 3 else "")
        raise RemoteError(
            INCOMPLETE,
            f"remote '{name}' ({url}) lacks {n_absent} of the {needed} tracked files this clone needs "
            f"({examples}): push them from the machine that built them (`dvc push -r {name}`), or {REBUILD}",
        )
    print(f"{PROG}: remote '{name}' ({url}): {how}; it holds all {needed} tracked files this clone lacks")
    return name, needed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["pull", "check"], default="pull")
    parser.add_argument("-r", "--remote", default=None, help="remote name (default: DVC's default remote)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the remote to answer")
    args = parser.parse_args(argv)
    try:
        name, _ = check(args.remote, args.timeout)
    except RemoteError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return err.code
    if args.command == "check":
        return 0
    start = time.monotonic()
    pulled = subprocess.run([sys.executable, "-m", "dvc", "pull", "--remote", name])
    if pulled.returncode != 0:
        print(f"{PROG}: `dvc pull -r {name}` failed (exit {pulled.returncode}, above); nothing re-stamped", file=sys.stderr)
        return FAILED
    print(f"{PROG}: pulled from '{name}' in {time.monotonic() - start:.1f} s; re-stamping for Snakemake (make sync)")
    synced = subprocess.run([sys.executable, "-m", "mae_hlvm.workflow.sync"])
    return 0 if synced.returncode == 0 else FAILED


if __name__ == "__main__":
    raise SystemExit(main())

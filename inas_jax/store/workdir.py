"""One run per workdir: its lock, and the guard that it holds this run's settings and data."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib

from inas_jax.config import ConfigError, RunConfig, differences
from inas_jax.runtime.atomic import write_json
from inas_jax.store.files import WorkdirError, first_line


def take_lock(workdir: pathlib.Path) -> int:
    """Locks workdir/.lock (flock, never through a link) and writes this pid into it; returns its file
    descriptor, whose closing releases the lock. WorkdirError if another process holds it."""
    lock = workdir / ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:  # a link (ELOOP), a directory (EISDIR), no permission
        raise WorkdirError(f"{str(lock)!r} cannot be this run's lock file ({err.strerror or err}: a link, a directory "
                           "or not writable); move it away to use this workdir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise WorkdirError(f"workdir {str(workdir)!r} is in use by another run (pid {holder}); wait for "
                               "it to end or use another --workdir") from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def comparable(record: dict) -> dict:
    """A config.json record as the guard compares it: an npz dataset by its arrays (the fingerprint's
    sha256), not by how its path is spelled, its file name or its compressed size."""
    config, data = dict(record["config"]), dict(record["data"])
    if str(config.get("dataset", "")).startswith("npz:"):
        config["dataset"] = "npz"
        data = {k: v for k, v in data.items() if k not in ("name", "file_bytes")}
    return {"config": config, "data": data}


def check_config(workdir: pathlib.Path, record: dict) -> None:
    """Writes `record` ({'config', 'data'}) to workdir/config.json for a new run; for an existing one
    checks that the stored record equals it (stored configs read with their legacy settings).
    WorkdirError naming the differences, or the damage."""
    path = workdir / "config.json"
    if not path.exists():
        write_json(path, record)
        return
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict) or set(stored) != {"config", "data"}:
            raise ConfigError("expected an object with 'config' and 'data'")
        stored["config"] = RunConfig.from_dict(stored["config"]).to_dict()  # checked, LEGACY_SETTINGS filled
    except (ValueError, OSError) as err:  # JSONDecodeError and ConfigError are ValueErrors
        raise WorkdirError(f"{str(path)!r} is unreadable ({first_line(err)}); restore it or use another "
                           "--workdir") from None
    diff = differences(comparable(stored), comparable(record))
    if diff:
        raise WorkdirError(f"workdir {str(workdir)!r} holds a run with other settings or data "
                           f"({'; '.join(d.removeprefix('config.') for d in diff)}); use another --workdir or "
                           "the same settings and data")

"""Atomic file writes: a fresh temporary file beside the target, renamed over it.

A kill at any moment leaves either the old file or the new one, never half of one; the temporary
name is created exclusively (never a path that exists, such as a planted link), and a link at the
target is replaced, never followed. Leftover temporaries match `.NAME.*.tmp`.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import BinaryIO, Callable


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> pathlib.Path:
    """Writes `path` through `write(binary file)` atomically; returns the path."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, obj) -> pathlib.Path:
    return write_text(path, json.dumps(obj, indent=1))

"""Compiled code is kept: a persistent XLA compilation cache shared by a user's runs, and a count of
the compilations a run did.

Every run of the same shapes (a resume, a rerun, another workdir, another candidate with the same
architecture) then reads its executables from disk instead of compiling: the default digits run
spends most of its time compiling on a cold cache. The cache lives in
$INAS_JAX_COMPILATION_CACHE, else $XDG_CACHE_HOME/inas_jax/xla, else ~/.cache/inas_jax/xla; the
value "off" turns it off. It holds executables that this user's runs load and execute, so a
directory another user owns or may write is refused (as ssh refuses a private key with loose
permissions); $INAS_JAX_SHARED_CACHE=1 accepts a directory shared deliberately with a group (owned by
another member, group-writable), never one that anybody may write.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import pathlib
from typing import Callable, Hashable

import jax

from inas_jax.config import ConfigError

log = logging.getLogger(__name__)

ENV = "INAS_JAX_COMPILATION_CACHE"
SHARED_ENV = "INAS_JAX_SHARED_CACHE"
OFF = "off"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def default_cache_dir() -> str:
    """$INAS_JAX_COMPILATION_CACHE, else the user cache directory's inas_jax/xla."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(pathlib.Path.home(), ".cache")
    return os.path.join(base, "inas_jax", "xla")


def enable_persistent_cache(path: str | None = None) -> str | None:
    """Points JAX's persistent compilation cache at `path` (default: default_cache_dir()), keeping
    every executable however small or quick to compile; "off" leaves it off. Call it before the
    first compilation. Returns the directory used, or None when off."""
    path = path or default_cache_dir()
    if path == OFF:
        return None
    os.makedirs(path, mode=0o700, exist_ok=True)
    check_cache_dir(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


class CacheError(ConfigError):
    """The compilation cache's directory may hold executables written by somebody else."""


def check_cache_dir(path: str) -> None:
    """Raises CacheError, naming the fix, if `path` (links followed) is not a directory owned by this
    user and writable by nobody else; with $INAS_JAX_SHARED_CACHE=1 a group's shared directory passes,
    but never one that others may write."""
    st = os.stat(path)
    shared = os.environ.get(SHARED_ENV) == "1"
    where = f"the compilation cache {path!r}"
    if not os.path.isdir(path):
        raise CacheError(f"{where} is not a directory; pass another --compilation_cache or 'off'")
    if st.st_mode & 0o002:
        raise CacheError(f"{where} is writable by every user, who could plant executables that runs load: "
                         f"`chmod o-w {path}`, or pass another --compilation_cache or 'off'")
    if not shared and st.st_uid != os.getuid():
        raise CacheError(f"{where} is owned by another user (uid {st.st_uid}), who could plant executables that "
                         f"runs load: pass your own --compilation_cache or 'off' (or set {SHARED_ENV}=1 for a "
                         "cache shared deliberately with a group)")
    if not shared and st.st_mode & 0o020:
        raise CacheError(f"{where} is writable by its group, who could plant executables that runs load: "
                         f"`chmod g-w {path}`, or set {SHARED_ENV}=1 for a cache shared deliberately with a group")


@dataclasses.dataclass
class Compilations:
    """Counts of the XLA compilations in this process: `compiled` (jit cache misses, each either
    compiled or read from the persistent cache) and `from_disk` (read from the persistent cache)."""

    compiled: int = 0
    from_disk: int = 0

    def since(self, before: "Compilations") -> "Compilations":
        """The counts between the snapshot `before` and this one."""
        return Compilations(self.compiled - before.compiled, self.from_disk - before.from_disk)

    def summary(self) -> str:
        return f"{self.compiled} XLA compilations ({self.from_disk} read from the persistent cache)"


COUNTS = Compilations()


def _on_duration(event: str, duration: float, **_) -> None:
    if event == _COMPILE_EVENT:
        COUNTS.compiled += 1


def _on_event(event: str, **_) -> None:
    if event == _HIT_EVENT:
        COUNTS.from_disk += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)


def snapshot() -> Compilations:
    """The counts so far (a copy); `later.since(earlier)` counts the compilations in between."""
    return dataclasses.replace(COUNTS)


class CompileAhead:
    """Warm-ups on one background thread: functions that compile what a later call runs (by running
    it once on zeros, e.g. `train.warm_up`), so compiling the next iNAS candidate overlaps training
    the current one. XLA compiles without Python's lock, so with a CPU to spare the compiling
    overlaps the training instead of preceding it. Disabled, every method is a no-op.

    A context manager: leaving it cancels the warm-ups not started and waits for a running one,
    except when leaving on an exception (Ctrl-C, an error): then the exception goes on at once and
    the interpreter waits for that warm-up only at exit.
    """

    def __init__(self, enabled: bool):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "compile-ahead") if enabled else None
        self._futures: dict[Hashable, concurrent.futures.Future] = {}

    def submit(self, key: Hashable, warm_up: Callable[[], object]) -> None:
        """Queues warm_up() under `key` (once per key)."""
        if self._pool is not None and key not in self._futures:
            self._futures[key] = self._pool.submit(warm_up)

    def claim(self, key: Hashable) -> None:
        """Call before the real work of `key`: waits for its warm-up if it has started, else cancels it
        (the caller compiles). A warm-up's error is logged only; the real call meets it in context."""
        future = self._futures.pop(key, None)
        if future is None or future.cancel():
            return
        try:
            future.result()
        except Exception as err:  # noqa: BLE001 - any error recurs in the real call
            log.debug("warm-up of %s failed: %r", key, err)

    def __enter__(self) -> "CompileAhead":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=exc_type is None, cancel_futures=True)

"""Compiled code is kept: a persistent XLA compilation cache shared by a user's runs, and a count of
the compilations a run did.

Every run of the same shapes (a resume, a rerun, another workdir, another candidate with the same
architecture) then reads its executables from disk instead of compiling: the default digits run
spends most of its time compiling on a cold cache. The cache lives in
$INAS_JAX_COMPILATION_CACHE, else $XDG_CACHE_HOME/inas_jax/xla, else ~/.cache/inas_jax/xla; the
value "off" turns it off. It holds executables that this user's runs load and execute: keep it
private to the user (the default directory is).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import jax

ENV = "INAS_JAX_COMPILATION_CACHE"
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
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


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

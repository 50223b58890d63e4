"""What every part of the run store shares: its error, Orbax managers and the newest readable
checkpoint. (Its JSON files are written with runtime.atomic.write_json.)"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class WorkdirError(ValueError):
    """The workdir cannot hold this run: other settings or data, in use, or damaged beyond recovery."""


def remove(path: pathlib.Path) -> None:
    """Removes what is at `path`: a link or file is unlinked (a link's target is never touched), a
    directory removed with its contents; nothing there is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def remove_stale_temporaries(directory: pathlib.Path) -> None:
    """Removes the temporary files write_json left in `directory` when a process died mid-write."""
    for tmp in directory.glob(".*.tmp"):
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink(missing_ok=True)


def first_line(err: Exception) -> str:
    """An exception's first line (at most 200 characters), for one-line messages."""
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def manager(directory: pathlib.Path, keep: int) -> ocp.CheckpointManager:
    """A synchronous Orbax manager of `directory` keeping the newest `keep` steps."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise WorkdirError(f"{str(directory)!r} is not a directory of this run (a file or a link); move it away to "
                           "resume this workdir")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
    if jax.process_count() > 1:
        # Several processes (jax.distributed): only the writer keeps the workdir (store.shared), so its
        # managers must not wait for the others at Orbax's barriers (and then Orbax creates no directory).
        directory.mkdir(parents=True, exist_ok=True)
        only_me = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                                     active_processes={jax.process_index()})
        options = dataclasses.replace(options, create=False, multiprocessing_options=only_me)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def newest_readable(manager_: ocp.CheckpointManager, restore: Callable[[int], Any], what: str,
                    delete_damaged: bool) -> Any:
    """restore(step) of the newest step it succeeds on, trying steps newest first. A step whose
    restore raises is damaged: logged as a warning (and deleted if delete_damaged), then the one
    before is tried. restore returning None stops the search. None if no step is readable."""
    for step in sorted(manager_.all_steps(), reverse=True):
        try:
            return restore(step)
        except Exception as err:  # a damaged checkpoint must never be resumed from
            log.warning("%s checkpoint %d in %s is unreadable (%s); falling back to the previous one", what, step,
                        manager_.directory, first_line(err))
            if delete_damaged:
                manager_.delete(step)
    return None

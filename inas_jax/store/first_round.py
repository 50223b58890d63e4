"""First-round sharing: a run keeps its finished first round in first_round/, and a run that differs
only in its query function (config.QUERY_SETTINGS) starts from it instead of recomputing it: the first
round is searched and trained before any query, so the results are the same."""
from __future__ import annotations

import json
import logging
import pathlib
import shutil

from inas_jax.config import QUERY_SETTINGS, differences, with_legacy_settings
from inas_jax.store import rounds
from inas_jax.runtime.atomic import write_json
from inas_jax.store.files import WorkdirError, first_line, remove
from inas_jax.store.training import TrainingCheckpoints
from inas_jax.store.workdir import comparable

log = logging.getLogger(__name__)

FIRST_ROUND = "first_round"


def adopt(workdir: pathlib.Path, source: pathlib.Path, record: dict) -> None:
    """Copies `source`'s kept first round (progress and final-training checkpoint) into `workdir`, if it
    holds no run in progress yet; the run then repeats exactly what it would compute itself, and
    records the same phase times. `record` is this run's config.json. WorkdirError if source is
    another run or kept no first round."""
    started = [p for p in (workdir / "rounds", workdir / "training") if p.is_dir() and any(p.iterdir())]
    if started or (workdir / "round_progress.json").exists():
        log.info("%s already holds a run in progress: not starting from %s's first round", workdir, source)
        return
    what = f"--first_round_from={str(source)!r}"
    try:
        stored = json.loads((source / "config.json").read_text())
        stored["config"] = with_legacy_settings(stored["config"])
        diff = differences(comparable(stored), comparable(record))
    except (ValueError, OSError, AttributeError) as err:
        raise WorkdirError(f"{what}: its config.json is unreadable ({first_line(err)})") from None
    other = [d for d in diff if d.split(":", 1)[0] not in {f"config.{k}" for k in QUERY_SETTINGS}]
    if other:
        raise WorkdirError(f"{what} is a run with other settings or data ({'; '.join(other)}); only the "
                           f"query function's settings ({', '.join(QUERY_SETTINGS)}) may differ")
    kept = source / FIRST_ROUND
    if not (kept / "round_progress.json").is_file():
        raise WorkdirError(f"{what} holds no finished first round to start from (a run keeps it when its "
                           "first round ends)")
    for step in kept.glob("training/*"):  # none if the final training ended before its first checkpoint
        staging = workdir / f"{FIRST_ROUND}.adopting"
        remove(staging)
        shutil.copytree(step, staging)
        (workdir / "training").mkdir(exist_ok=True)
        staging.rename(workdir / "training" / step.name)
    write_json(workdir / "round_progress.json", json.loads((kept / "round_progress.json").read_text()))
    log.info("starting from the first round of %s", source)


def keep(workdir: pathlib.Path, training: TrainingCheckpoints) -> None:
    """Keeps the first round's progress (iNAS scores, phase times) and the newest checkpoint of its
    final training, if it has one, in first_round/ (replaced atomically)."""
    staging, kept = workdir / f"{FIRST_ROUND}.tmp", workdir / FIRST_ROUND
    remove(staging)
    step = training.final_step_of_first_round()
    if step is not None:
        shutil.copytree(training.dir / str(step), staging / "training" / str(step))
    progress = rounds.read_progress(workdir / "round_progress.json", 0)
    staging.mkdir(exist_ok=True)
    rounds.write_progress(staging / "round_progress.json", 0, progress["scores"], progress["spent"])
    remove(kept)
    staging.rename(kept)

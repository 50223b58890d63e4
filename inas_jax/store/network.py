"""The latest round's trained network (network/<round>/), the model a run hands back: its weights
(params, batch_stats) and what rebuilds it (the run's settings, arch, class names, image shape and
normalisation statistics). `inas_jax.predict` loads it; the newest readable step is used."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from inas_jax.config import RunConfig
from inas_jax.model.network import Model, build_model
from inas_jax.model.search_space import Arch
from inas_jax.store.files import WorkdirError, first_line, manager, newest_readable

DIR = "network"


@dataclasses.dataclass(frozen=True)
class Network:
    """A trained network ready to run: model (with its normalisation), variables {params, batch_stats},
    the K class names, the image shape (H, W, C) it takes, and the round (1-based) that trained it."""

    model: Model
    variables: dict
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    round: int
    config: RunConfig


def save_network(workdir: pathlib.Path, cfg: RunConfig, round_: int, arch: Arch, model: Model, state: Any,
                 classes: tuple[str, ...], image_shape: tuple[int, ...]) -> None:
    """Keeps the network trained in round `round_` (0-based) as network/<round_+1>/ (the newest 2 kept)."""
    meta = {"config": cfg.to_dict(), "round": round_ + 1, "arch": arch.to_json(), "classes": list(classes),
            "image_shape": list(image_shape), "mean": np.asarray(model.mean).tolist(),
            "std": np.asarray(model.std).tolist()}
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    keeper = manager(workdir / DIR, keep=2)
    try:
        if round_ + 1 in keeper.all_steps():  # a round recomputed after a kill or a damaged checkpoint
            keeper.delete(round_ + 1)
        keeper.save(round_ + 1, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                                         meta=ocp.args.JsonSave(meta)), force=True)
        keeper.wait_until_finished()
    finally:
        keeper.close()


def load_network(workdir: str | pathlib.Path) -> Network:
    """The newest readable network of the run in `workdir`; WorkdirError if it has none."""
    directory = pathlib.Path(workdir) / DIR
    if not directory.is_dir():
        raise WorkdirError(f"{str(workdir)!r} holds no trained network yet (no {DIR}/): run at least one round")
    keeper = manager(directory, keep=2)
    try:
        def restore(step: int) -> Network:
            got = keeper.restore(step, args=ocp.args.Composite(variables=ocp.args.StandardRestore(),
                                                                meta=ocp.args.JsonRestore()))
            meta = got["meta"]
            cfg = RunConfig.from_dict(meta["config"])
            stats = (np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32))
            model = build_model(Arch.from_json(meta["arch"]), len(meta["classes"]), cfg.model, stats)
            return Network(model, got["variables"], tuple(meta["classes"]), tuple(meta["image_shape"]),
                           int(meta["round"]), cfg)
        found = newest_readable(keeper, restore, "network", delete_damaged=False)
    except (OSError, ValueError) as err:
        raise WorkdirError(f"{directory} cannot be read ({first_line(err)})") from None
    finally:
        keeper.close()
    if found is None:
        raise WorkdirError(f"{directory} holds no readable network; rerun the run's command to train it again")
    return found

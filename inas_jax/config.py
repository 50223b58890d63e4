"""Settings: every value that determines a run's results, in one place.

`RunConfig` (with its `ModelConfig` and `TrainConfig`) holds them; each field's default is the `cpu`
preset on the digits data, so a bare `RunConfig()` is a coherent small run. `PRESETS` change some
of them, `from_preset` merges preset, dataset and explicit settings, `SETTINGS` lists the fields
that are command-line flags (the driver defines one flag per entry), and `validate` checks every
value before any work starts. Adding a setting = one field here (with its help) and its use.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from typing import Any

from inas_jax.model.search_space import Arch

STRATEGIES = ("inas", "fixed", "longtail")
COMPUTE_DTYPES = ("float32", "bfloat16")
MAX_SEED = 2 ** 31 - 1  # jax.random.key(seed) distinguishes every seed in 0..MAX_SEED
# Pool points per compiled MC-dropout / BALD call (inas_jax.queries.uncertainty): their memory is
# O(MC_CHUNK * passes * C), which inas_jax.runtime.resources bounds.
MC_CHUNK = 8192
# The phases of a round whose wall and CPU seconds every round record holds, in order.
PHASES = ("search", "train", "query")
# The query functions by --query name, with their help; inas_jax.queries registers one function for
# each (a test checks the two agree). Kept here so that checking a command line loads no jax.
QUERY_HELP = {
    "sr": "softmax response, the lowest top-class probability (the paper's)",
    "mcdropout": "variance of the predicted class's probability over MC-dropout passes (the paper's)",
    "entropy": "highest predictive entropy",
    "margin": "smallest gap between the two largest probabilities",
    "bald": "mutual information between prediction and dropout mask over the MC passes",
    "coreset": "greedy k-center on the embeddings (Sener & Savarese; the paper's)",
    "badge": "k-means++ seeding on gradient embeddings (Ash et al.'s BADGE)",
    "typiclust": "the most typical point of the least covered k-means clusters (Hacohen et al.)",
    "random": "uniformly at random (passive learning)",
}
# The convolution lowerings (inas_jax.model.conv.ConvLowering) and the defaults of the CPU rule.
CONV_IMPLS = ("auto", "xla", "patches", "winograd")
PATCH_MAX_SIZE = 16  # conv_impl="auto" on the CPU: patch GEMMs for outputs up to 16x16
# conv_impl="auto" on the CPU: XLA's own convolution for stride-1 convs with at most this many input
# and output channels and outputs of at least 2x2 (fastest there, see ConvLowering, and the quickest to
# compile: one op, where a Winograd conv's transforms take ~1 s to compile and a patch GEMM's ~0.2 s).
XLA_MAX_CHANNELS = 16


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting and the bad value."""


def setting(default: Any, help: str, flag: bool = True):
    """A config field with its command-line help; flag=False keeps it off the command line."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """How the network is built (the architecture itself is chosen per round)."""

    width: int = setting(8, "Base width: channels of the first stack (paper 64).")
    compute_dtype: str = setting("float32", "float32 | bfloat16 (accelerators); parameters stay float32.")
    conv_impl: str = setting("auto", f"Convolution lowering: {' | '.join(CONV_IMPLS)}.")
    patch_max_size: int = setting(PATCH_MAX_SIZE, "conv_impl=auto on the CPU: patch GEMMs for outputs up to "
                                                  "this many pixels a side.")
    winograd: bool = setting(True, "conv_impl=auto on the CPU: Winograd F(2x2,3x3) for 3x3 stride-1 convs.")
    xla_max_channels: int = setting(XLA_MAX_CHANNELS, "conv_impl=auto on the CPU: XLA's convolution for stride-1 "
                                                      "convs with at most this many channels in and out (0: none).")
    dropout: float = setting(0.0, "Training-time dropout rate on the embedding (0 = the paper's setting; "
                                  "Gal et al.'s MC-dropout/BALD train with dropout, e.g. 0.5).")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one network is trained.

    The learning rate is `lr`, multiplied by 0.1 after 50% and again after 75% of `schedule_epochs`
    (default: `epochs`). iNAS candidates run the final training's schedule but stop early, as in
    the original code: epochs=50 with schedule_epochs=200 trains 50 epochs at lr 0.1.
    Weight decay follows the original Keras code: 5e-4 * sum(w**2) is added to the loss for conv
    kernels only, i.e. a gradient of 2 * 5e-4 * w (PyTorch's weight_decay=5e-4 is half of that).
    """

    epochs: int = setting(12, "Training epochs per round (paper 200).")
    schedule_epochs: int | None = setting(None, "Epochs the LR schedule spans (None = epochs).", flag=False)
    epoch_size: int = setting(2048, "Samples per epoch, drawn from the labelled set (paper 50000).")
    batch_size: int = setting(64, "Batch size (paper 128).")
    lr: float = setting(0.1, "Initial learning rate.")
    momentum: float = setting(0.9, "SGD momentum.")
    nesterov: bool = setting(True, "Nesterov momentum.")
    weight_decay: float = setting(5e-4, "L2 coefficient on conv kernels (Keras convention: gradient 2*wd*w).")
    flip: bool = setting(False, "Random horizontal flips (default: on, except for digits).")
    max_shift: int = setting(1, "Random shifts up to this many pixels (default: 4, digits 1).")
    max_rotation: float = setting(10.0, "Random rotations up to this many degrees (default: 15, digits 10).")
    eval_batch_size: int = setting(128, "Images per jitted inference call.")

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.epoch_size // self.batch_size)

    def step_config(self) -> "TrainConfig":
        """The fields one SGD step depends on (the jit cache key): a candidate stopped early shares
        the compiled step of the final training with the same schedule."""
        return dataclasses.replace(self, epochs=self.schedule_epochs or self.epochs, schedule_epochs=None,
                                   eval_batch_size=0)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# RunConfig settings that only the query functions read: runs differing in nothing else share their
# first round (search and final training), which comes before any query.
QUERY_SETTINGS = ("query", "mc_passes", "mc_rate")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines the results of one active-learning run (not where it is stored)."""

    dataset: str = setting("digits", "digits | cifar10 | cifar100 | svhn | npz:PATH | folder:DIR (an image folder)")
    query: str = setting("sr", "Query function: " + "; ".join(f"{n}: {h}" for n, h in QUERY_HELP.items()))
    strategy: str = setting("inas", "inas (grow from --arch) | fixed (train --arch in every round) | longtail "
                                    "(iNAS from --arch until it stops, in the first round only; then fixed)")
    arch: Arch = setting(Arch(1, 1), "BLOCKS,STACKS: iNAS start (default 1,1) or the fixed architecture "
                                     "(required with --strategy=fixed; the paper's are 1,2 and 2,4).")
    initial_size: int = setting(100, "Initial random labelled set size k.")
    query_sizes: tuple[int, ...] = setting((100,), "Query batch sizes in order; the last repeats (paper: "
                                                   "2000,2000,2000,2000,5000).")
    budget: int = setting(500, "Total labels at the last round.")
    train_passes: float = setting(0.0, "If > 0, a round's final training lasts max(epochs, ceil(train_passes * "
                                       "labels / epoch_size)) epochs, so training grows with the labelled set "
                                       "(candidates keep inas_epochs / epochs of it).")
    inas_epochs: int = setting(4, "Epochs per iNAS candidate (paper 50).")
    t_inas: int = setting(1, "iNAS steps per round (paper 1).")
    seed: int = setting(0, f"Seed of the initial set, weights, batches and queries (0..{MAX_SEED}).")
    mc_passes: int = setting(100, "Stochastic passes of mcdropout and bald.")
    mc_rate: float = setting(0.5, "Dropout rate of the MC passes of mcdropout and bald.")
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def round_train(self, n_labelled: int) -> TrainConfig:
        """The final training of a round with n_labelled labels: `train`, its epochs raised to cover
        `train_passes` passes over the labelled set when that is set."""
        epochs = self.train.epochs
        if self.train_passes:
            epochs = max(epochs, math.ceil(self.train_passes * n_labelled / self.train.epoch_size - 1e-6))
        return self.train.replace(epochs=epochs)

    def round_candidate_train(self, n_labelled: int) -> TrainConfig:
        """iNAS candidates: the round's final schedule, stopped after the same fraction of it as
        inas_epochs is of epochs (the paper's 50 of 200)."""
        final = self.round_train(n_labelled).epochs
        return self.train.replace(epochs=max(1, round(final * self.inas_epochs / self.train.epochs)),
                                  schedule_epochs=final)

    def schedule(self) -> list[int]:
        """Labelled-set sizes of the rounds: initial_size, then + query_sizes[i] (last repeating), to budget."""
        sizes = [self.initial_size]
        while sizes[-1] < self.budget:
            step = self.query_sizes[min(len(sizes) - 1, len(self.query_sizes) - 1)]
            sizes.append(min(sizes[-1] + step, self.budget))
        return sizes

    def replace(self, **settings) -> "RunConfig":
        """A copy with settings changed by name, whichever config holds them (width, lr, seed, ...).
        Values are converted from their command-line forms ("2,4" for arch, lists for query_sizes)."""
        own, model, train = {}, {}, {}
        for name, value in settings.items():
            if name not in _OWNER:
                raise ConfigError(f"unknown setting {name!r}")
            target = {"run": own, "model": model, "train": train}[_OWNER[name]]
            target[name] = _convert(name, value)
        return dataclasses.replace(self, **own, model=dataclasses.replace(self.model, **model),
                                   train=dataclasses.replace(self.train, **train))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["arch"], d["query_sizes"] = self.arch.to_json(), list(self.query_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        """Inverse of to_dict (also of a record written before a LEGACY_SETTINGS entry existed); raises
        ConfigError naming the first missing, unknown or mistyped field."""
        return _from_dict(cls, with_legacy_settings(d), "")


# Settings added after runs were recorded, with the value that reproduces those runs: a stored config
# without one is read with that value (before XLA_MAX_CHANNELS, no convolution was XLA's by that rule).
LEGACY_SETTINGS = {("model", "xla_max_channels"): 0}


def with_legacy_settings(d: Any) -> Any:
    """A copy of d, a stored RunConfig dict, with each LEGACY_SETTINGS entry it lacks filled in."""
    d = copy.deepcopy(d)
    for (*parents, name), value in LEGACY_SETTINGS.items():
        node = d
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(name, value)
    return d


def _from_dict(cls, d: Any, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} is not an object")
    names = [f.name for f in dataclasses.fields(cls)]
    extra, missing = sorted(set(d) - set(names)), [n for n in names if n not in d]
    if extra or missing:
        raise ConfigError(f"{'unknown' if extra else 'missing'} setting {prefix}{(extra or missing)[0]}")
    values = {}
    for name in names:
        tp, value = _HINTS[cls][name], d[name]
        if dataclasses.is_dataclass(tp) and tp is not Arch:
            values[name] = _from_dict(tp, value, f"{prefix}{name}.")
        else:
            values[name] = _typed(f"{prefix}{name}", tp, value)
    return cls(**values)


def _typed(name: str, tp, value):
    """value as a field of type tp (from JSON), or ConfigError."""
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str)}
    if tp is Arch:
        try:
            return Arch.from_json(value)
        except ValueError as err:
            raise ConfigError(f"{name}: {err}") from None
    if tp == tuple[int, ...]:
        if isinstance(value, list) and all(ok[int](v) for v in value):
            return tuple(value)
    elif tp == (int | None):
        if value is None or ok[int](value):
            return value
    elif ok[tp](value):
        return float(value) if tp is float else value
    raise ConfigError(f"{name}={value!r} is not of type {getattr(tp, '__name__', tp)}")


_HINTS = {cls: typing.get_type_hints(cls) for cls in (RunConfig, ModelConfig, TrainConfig)}
_OWNER = {**{f.name: "train" for f in dataclasses.fields(TrainConfig)},
          **{f.name: "model" for f in dataclasses.fields(ModelConfig)},
          **{f.name: "run" for f in dataclasses.fields(RunConfig) if f.name not in ("model", "train")}}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One command-line setting: its name, type (int, float, bool, str, Arch or tuple[int, ...]), help
    and default (that of the `cpu` preset on digits)."""

    name: str
    type: Any
    help: str
    default: Any


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, _HINTS[cls][f.name], f.metadata["help"], f.default)
    for cls in (RunConfig, ModelConfig, TrainConfig) for f in dataclasses.fields(cls)
    if f.metadata.get("flag"))


def _convert(name: str, value):
    """A setting's value from its command-line form: "2,4" -> Arch, ["100", "50"] -> (100, 50)."""
    owner = {"run": RunConfig, "model": ModelConfig, "train": TrainConfig}[_OWNER[name]]
    tp = _HINTS[owner][name]
    if tp is Arch and isinstance(value, str):
        try:
            return Arch.parse(value)
        except ValueError as err:
            raise ConfigError(f"--arch={value!r}: {err}") from None
    if tp == tuple[int, ...] and isinstance(value, (list, tuple)):
        try:
            return tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"--{name}={','.join(map(str, value))} must be a comma-separated list of "
                              "integers") from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# Presets change the defaults (the `cpu` preset is the defaults); explicit settings override them.
PRESETS: dict[str, dict] = {
    "cpu": {},
    # The paper's protocol exactly (GPU/TPU scale).
    "paper": dict(width=64, epochs=200, epoch_size=50_000, batch_size=128, inas_epochs=50, initial_size=2000,
                  query_sizes=(2000, 2000, 2000, 2000, 5000), budget=50_000, t_inas=1),
    # CIFAR-10 at the scale of a 2-core CPU, ~10 minutes a run: the paper's structure (iNAS from A(1,1),
    # oversampled epochs, step LR decay, augmentation, a random initial set, growing queries) with
    # width 64 -> 16, 200 epochs of 50,000 -> 30 of 2,048, candidates 50 -> 8 epochs (the same quarter
    # of the schedule), labels 2,000..50,000 -> 1,000..4,000. See README "The earlier study: cifar_cpu".
    # patch_max_size=4, winograd=False, xla_max_channels=0, eval_batch_size=1000: the convolution lowering
    # and inference batch the committed study ran with (the defaults since, XLA's convolution for narrow
    # stride-1 convs, patch GEMMs up to 16x16, Winograd for wider 3x3 stride-1 convs and inference batches
    # of 128, are faster and equal up to float rounding; augmentation's own jitted call rounds a few
    # pixels differently, so today's code no longer reproduces it bit for bit).
    "cifar_cpu": dict(width=16, epochs=30, epoch_size=2048, batch_size=128, inas_epochs=8, initial_size=1000,
                      query_sizes=(500, 500, 1000), budget=4000, t_inas=1, patch_max_size=4, winograd=False,
                      xla_max_channels=0, eval_batch_size=1000),
    # CIFAR-10 at CPU scale with every final training run to a plateau (experiments/convergence.py):
    # 240 epochs of 2,048 samples per 1,000 labels (491.52 passes over the labelled set); candidates
    # train a quarter of it. Labels 1,000 -> 2,500 -> 4,000. See README "CIFAR-10: the evidence study".
    # xla_max_channels=0: the lowering the study runs with (Winograd for the first stack's 16-channel convs,
    # a patch GEMM for the stem); the default's XLA convolutions there train ~15-30% faster at width 16
    # and round differently, which would mix two numerics in one study.
    "cifar_plateau": dict(width=16, epochs=240, train_passes=491.52, epoch_size=2048, batch_size=128,
                          inas_epochs=60, initial_size=1000, query_sizes=(1500,), budget=4000, t_inas=1,
                          xla_max_channels=0),
}
# Augmentation per dataset: natural images get flips, 4-pixel shifts and 15-degree rotations (the
# paper's); the 8x8 digits no mirroring and smaller moves.
IMAGE_AUGMENT = dict(flip=True, max_shift=4, max_rotation=15.0)
DATASET_AUGMENT = {"digits": dict(flip=False, max_shift=1, max_rotation=10.0)}


def from_preset(preset: str = "cpu", dataset: str = "digits", **settings) -> RunConfig:
    """The preset's values, then the dataset's augmentation, then `settings` (by name, as in
    RunConfig.replace). --strategy=fixed needs an explicit arch."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset={preset!r} is unknown: choose one of {', '.join(PRESETS)}")
    if settings.get("strategy") == "fixed" and settings.get("arch") is None:
        raise ConfigError("--strategy=fixed needs --arch=BLOCKS,STACKS (the paper's baselines: 1,2 and 2,4)")
    values = {**PRESETS[preset], **DATASET_AUGMENT.get(dataset, IMAGE_AUGMENT), **settings}
    return RunConfig(dataset=dataset).replace(**values)


def run_name(cfg: RunConfig) -> str:
    """File-name-safe run name, e.g. cifar10_fixed2x4_coreset_seed0."""
    kind = f"fixed{cfg.arch.slug}" if cfg.strategy == "fixed" else cfg.strategy
    return f"{dataset_label(cfg.dataset)}_{kind}_{cfg.query}_seed{cfg.seed}"


def dataset_label(dataset: str) -> str:
    """Short file-name-safe name of a --dataset value: npz:../data/cifar10.npz -> cifar10."""
    name = dataset.removeprefix("npz:").removeprefix("folder:").rstrip("/").split("/")[-1].removesuffix(".npz")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Names of the settings that differ between two config dicts, as 'name: old -> new'."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _float_fields(cfg: RunConfig):
    for part in (cfg, cfg.model, cfg.train):
        for f in dataclasses.fields(part):
            if _HINTS[type(part)][f.name] is float:
                yield f.name, getattr(part, f.name)


def validate(cfg: RunConfig, pool_size: int | None = None) -> None:
    """Raises ConfigError naming the first bad setting. pool_size: the dataset's train size, when known."""
    if cfg.query not in QUERY_HELP:
        raise ConfigError(f"--query={cfg.query!r} is unknown: choose one of {', '.join(QUERY_HELP)}")
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"--strategy={cfg.strategy!r} is unknown: choose one of {', '.join(STRATEGIES)}")
    for name, value in _float_fields(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"--{name}={value} must be a finite number")
    m, t = cfg.model, cfg.train
    positive = dict(initial_size=cfg.initial_size, budget=cfg.budget, epochs=t.epochs, epoch_size=t.epoch_size,
                    batch_size=t.batch_size, width=m.width, inas_epochs=cfg.inas_epochs, t_inas=cfg.t_inas,
                    mc_passes=cfg.mc_passes, eval_batch_size=t.eval_batch_size, patch_max_size=m.patch_max_size,
                    lr=t.lr)
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"--{name}={value} must be positive")
    if m.xla_max_channels < 0:
        raise ConfigError(f"--xla_max_channels={m.xla_max_channels} must be >= 0 (0: XLA's convolution by this rule "
                          "nowhere)")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"--seed={cfg.seed} must be in 0..{MAX_SEED}")
    if not cfg.query_sizes or any(q <= 0 for q in cfg.query_sizes):
        raise ConfigError(f"--query_sizes={','.join(map(str, cfg.query_sizes))} must be positive numbers")
    if cfg.initial_size > cfg.budget:
        raise ConfigError(f"--initial_size={cfg.initial_size} exceeds --budget={cfg.budget}")
    room = cfg.budget - cfg.initial_size
    if room and max(cfg.query_sizes) > room:
        raise ConfigError(f"--query_sizes={','.join(map(str, cfg.query_sizes))} overrun the budget: at most "
                          f"{room} labels can be queried after --initial_size={cfg.initial_size}")
    if pool_size is not None and cfg.budget > pool_size:
        raise ConfigError(f"--budget={cfg.budget} exceeds the pool: dataset {cfg.dataset!r} has {pool_size} "
                          "training points")
    if t.batch_size > t.epoch_size or t.batch_size > cfg.initial_size:
        raise ConfigError(f"--batch_size={t.batch_size} exceeds --epoch_size={t.epoch_size} or the first labelled set "
                          f"(--initial_size={cfg.initial_size}): a batch must fit in an epoch and in the labels")
    if t.max_shift < 0 or t.max_rotation < 0:
        raise ConfigError("--max_shift and --max_rotation must be >= 0")
    if cfg.train_passes < 0:
        raise ConfigError(f"--train_passes={cfg.train_passes} must be >= 0")
    if cfg.inas_epochs > t.epochs:
        raise ConfigError(f"--inas_epochs={cfg.inas_epochs} exceeds --epochs={t.epochs}: candidates train a part "
                          "of the final schedule")
    if not 0.0 < cfg.mc_rate < 1.0:
        raise ConfigError(f"--mc_rate={cfg.mc_rate} must be in (0, 1)")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"--dropout={m.dropout} must be in [0, 1)")
    if not 0.0 <= t.momentum < 1.0 or t.weight_decay < 0:
        raise ConfigError(f"--momentum={t.momentum} must be in [0, 1) and --weight_decay={t.weight_decay} >= 0")
    if m.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"--compute_dtype={m.compute_dtype!r}: choose {' or '.join(COMPUTE_DTYPES)}")
    if m.conv_impl not in CONV_IMPLS:
        raise ConfigError(f"--conv_impl={m.conv_impl!r} is unknown: choose one of {', '.join(CONV_IMPLS)}")

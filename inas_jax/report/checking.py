"""Reading and checking results.json files, and grouping runs into curves (the seeds of one setting).

Every check raises ReportError with a one-line message naming the file: the report refuses its input
before it writes anything.
"""
from __future__ import annotations

import collections
import glob
import json
import math
import os
import re

from inas_jax.config import STRATEGIES, dataset_label, with_legacy_settings
from inas_jax.model.search_space import Arch
from inas_jax.runtime.atomic import write_atomic


class ReportError(ValueError):
    """The report's input is unusable; the message is one line naming the file or flag."""


MAX_COUNT = 10 ** 12  # no label or parameter count of a real run comes near
NAME = re.compile(r"[A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """`text` as one file name inside the report's directory: characters outside letters, digits, '.',
    '_' and '-' become '_', and a name of dots only gets a leading '_'."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:100] or "_"
    return "_" + name if set(name) == {"."} else name


def write_file(out: str, name: str, write) -> str:
    """Writes out/name (made safe) through `write(binary file)` atomically; returns the path."""
    return str(write_atomic(os.path.join(out, safe_name(name)), write))


def load_runs(patterns: list[str]) -> list[dict]:
    """Checked results.json contents of every run found, each with the key 'path' added.

    Unfinished runs are included, runs without a completed round skipped; a file reached twice
    (same real path) is read once. Raises ReportError.
    """
    runs, seen = [], set()
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            file = os.path.join(path, "results.json") if os.path.isdir(path) else path
            if not os.path.isfile(file):
                raise ReportError(f"no results.json at {path!r}")
            real = os.path.realpath(file)
            if real in seen:
                continue
            seen.add(real)
            run = read_results(file)
            if run["rounds"]:
                runs.append(dict(run, path=file))
    return runs


def read_results(file: str) -> dict:
    """One results.json, checked for the fields the report reads; raises ReportError naming the file."""
    try:
        with open(file, encoding="utf-8") as f:
            run = json.load(f)
    except json.JSONDecodeError as err:
        raise ReportError(f"{file}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno}); "
                          "truncated?") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{file}: cannot be read: {err}") from None
    problem = _results_problem(run)
    if problem:
        raise ReportError(f"{file}: {problem}")
    return {**run, "config": with_legacy_settings(run["config"])}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _arch_problem(value, where: str) -> str | None:
    try:
        Arch.from_json(value)
    except ValueError as err:
        return f"{where}: {err}"
    return None


def _results_problem(run) -> str | None:
    """What makes `run` unusable as a results.json, or None."""
    if not isinstance(run, dict):
        return f"expected a JSON object with 'config' and 'rounds', found {type(run).__name__}"
    missing = [k for k in ("config", "rounds") if k not in run]
    if missing:
        return f"lacks {' and '.join(map(repr, missing))}: not a results.json of inas_jax.main"
    config, rounds = run["config"], run["rounds"]
    if not isinstance(config, dict):
        return f"config is {type(config).__name__}, expected an object"
    for key, ok, expected in (("dataset", lambda v: isinstance(v, str), "a string"),
                              ("query", lambda v: isinstance(v, str) and NAME.fullmatch(v), "a name of letters, "
                               "digits, '.', '_' and '-'"),
                              ("strategy", lambda v: v in STRATEGIES, " or ".join(map(repr, STRATEGIES))),
                              ("seed", _is_int, "an integer")):
        if key not in config:
            return f"config lacks {key!r}"
        if not ok(config[key]):
            return f"config has {key}={config[key]!r}: expected {expected}"
    problem = _arch_problem(config.get("arch"), "config arch")
    if problem:
        return problem
    if not isinstance(rounds, list):
        return f"rounds is {type(rounds).__name__}, expected a list of round records"
    needs = ("num_labelled", "test_accuracy") + (("arch", "num_params") if config["strategy"] != "fixed" else ())
    previous = 0
    for i, record in enumerate(rounds, 1):
        problem = _round_problem(record, i, needs, previous)
        if problem:
            return problem
        previous = record["num_labelled"]
    return None


def _round_problem(record, i: int, needs: tuple[str, ...], previous: int) -> str | None:
    """What makes round record `i` unusable (it must have `needs` and more labels than `previous`), or None."""
    if not isinstance(record, dict):
        return f"round {i} is {type(record).__name__}, expected an object"
    lacking = [k for k in needs if k not in record]
    if lacking:
        return f"round {i} lacks {', '.join(map(repr, lacking))}"
    labelled, accuracy = record["num_labelled"], record["test_accuracy"]
    if not _is_int(labelled) or not previous < labelled <= MAX_COUNT:
        return f"round {i} has num_labelled={_short(labelled)}: expected an integer above {previous} (at most 10^12)"
    if not (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
            and math.isfinite(accuracy) and 0 <= accuracy <= 1):
        return f"round {i} has test_accuracy={_short(accuracy)}: expected a number in [0, 1]"
    for key in ("seconds", "cpu_seconds"):
        if key in record and not _times_ok(record[key]):
            return f"round {i} has {key}={_short(record[key])}: expected an object of finite numbers >= 0 by phase"
    if "arch" in needs:
        problem = _arch_problem(record["arch"], f"round {i} arch")
        if problem:
            return problem
        if not _is_int(record["num_params"]) or not 0 < record["num_params"] <= MAX_COUNT:
            return f"round {i} has num_params={_short(record['num_params'])}: expected a positive integer"
    return None


def _times_ok(times) -> bool:
    return isinstance(times, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in times.values())


def _short(value) -> str:
    """repr(value), at most 40 characters (a 400-digit number stays one short line)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def strategy_name(config: dict) -> str:
    """iNAS, long tail (architecture chosen once, on the passive initial set) or the fixed A(i,j)."""
    names = {"inas": "iNAS", "longtail": "long tail"}
    return names.get(config["strategy"]) or str(Arch.from_json(config["arch"]))


def _settings(config: dict, prefix: str = "") -> dict:
    """config flattened to {dotted name: value}, without the seed."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_settings(value, f"{prefix}{key}."))
        elif f"{prefix}{key}" != "seed":
            out[f"{prefix}{key}"] = value
    return out


def group_runs(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """{(dataset, strategy, query): [runs of different seeds]}.

    Raises ReportError when two runs of a group differ in a setting other than the seed, or share it.
    """
    groups = collections.defaultdict(list)
    for run in runs:
        c = run["config"]
        key = (dataset_label(c["dataset"]), strategy_name(c), c["query"])
        for other in groups[key]:
            _check_seeds_of_one_curve(other, run, key)
        groups[key].append(run)
    return dict(groups)


def _check_seeds_of_one_curve(a: dict, b: dict, key: tuple[str, str, str]) -> None:
    curve_name = " ".join(key)
    sa, sb = _settings(a["config"]), _settings(b["config"])
    differ = [f"{k}: {_shown(sa, k)} vs {_shown(sb, k)}" for k in sorted(set(sa) | set(sb))
              if k not in sa or k not in sb or sa[k] != sb[k]]
    if differ:
        raise ReportError(f"{a['path']} and {b['path']} would be seeds of one curve ({curve_name}) but differ in "
                          f"{'; '.join(differ)}: only the seed may differ; report them separately")
    if a["config"]["seed"] == b["config"]["seed"]:
        raise ReportError(f"{a['path']} and {b['path']} are the same run ({curve_name}, seed "
                          f"{a['config']['seed']}): give each run once")


def _shown(settings: dict, key: str) -> str:
    return repr(settings[key]) if key in settings else "absent"


def uneven_rounds(groups) -> list[str]:
    """One warning per curve whose seeds completed different numbers of rounds, naming each run's count."""
    out = []
    for key, runs in sorted(groups.items()):
        counts = [len(run["rounds"]) for run in runs]
        if len(set(counts)) > 1:
            listed = ", ".join(f"{run['path']}: {n}" for run, n in zip(runs, counts))
            out.append(f"{' '.join(key)}: seeds completed different numbers of rounds ({listed}); "
                       f"its curve and tables use the first {min(counts)}")
    return out

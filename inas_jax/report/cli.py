"""python -m inas_jax.report --out=DIR RUN [RUN ...]: learning curves and architectures from results.json.

RUN is a workdir, a results.json, or a glob of either. Runs with the same dataset, strategy (iNAS or
the fixed architecture) and query are seeds of one curve, drawn as mean +- sample std (ddof=1) over seeds.

Input is checked before anything is written; a violation prints one `error:` line, exit status 2:
  - every results.json is a JSON object with a config (dataset, strategy, query, seed, arch) and a
    list of round records (num_labelled rising, test_accuracy in [0, 1]; arch and num_params for iNAS);
  - --out, if it exists, is a directory;
  - each --equivalence=COMPARISON=MARGIN names a comparison these runs make ("random: iNAS - A(1,2)"),
    with a margin in (0, 1);
  - the seeds of one curve share every other setting: runs whose configs differ in anything but the
    seed (say train.width) are refused, naming the setting, not averaged; report them separately.
    Two files with the same config and seed (a copied run) are refused too.
A file reached twice (a workdir and its results.json, a symlink) counts once, by its real path. A
curve whose seeds completed different numbers of rounds is drawn over the rounds all completed, with
a warning on stderr naming each run's count. Writes:
  curves_<strategy>.png   test accuracy vs labels, one line per query
  compare_<query>.png     the same query under every strategy (a query run under more than one)
  architectures.png       the architecture iNAS chose per round (blocks x stacks and parameters)
  compute.png             test accuracy against cumulative CPU hours (runs that record cpu_seconds)
  summary.md              area under each learning curve (mean accuracy over the label range) and final accuracy;
                          accuracy at each label count (with --reference rows); AUC differences
                          paired by seed (query - random, iNAS - fixed) with 95% paired-t intervals,
                          a finding only where the interval excludes 0; CPU hours per phase and
                          iNAS's cost as a multiple of the fixed runs'; iNAS's architecture in every
                          round of every run
  numbers.md              the numbers a text about the runs quotes, each rounded once from the run
                          files: AUC differences in points (t, p, Bonferroni, seeds a finding would
                          need, each seed's), the equivalence tests declared with --equivalence,
                          accuracy differences at each label count, cumulative CPU hours and per-seed
                          cost ratios, parameter counts, every run's rounds, and the run files' sha1s
"""
from __future__ import annotations

import os
import sys

from inas_jax.report.checking import ReportError, group_runs, load_runs, uneven_rounds, write_file
from inas_jax.report.quoted import numbers_text
from inas_jax.report.statistics import comparisons
from inas_jax.report.tables import summary_text


def write_text(runs: list[dict], out: str, references: dict[str, dict[int, float]] | None = None,
               margins: dict[str, float] | None = None) -> list[str]:
    """Writes summary.md and numbers.md into `out`; returns their paths."""
    groups = group_runs(runs)
    written = []
    for name, text in (("summary.md", summary_text(groups, references)),
                       ("numbers.md", numbers_text(groups, runs, out, margins))):
        written.append(write_file(out, name, lambda f, text=text: f.write(text.encode())))
    return written


def write_report(runs: list[dict], out: str, references: dict[str, dict[int, float]] | None = None,
                 margins: dict[str, float] | None = None) -> list[str]:
    """Writes the PNGs, summary.md and numbers.md into `out`; returns the paths written. references:
    extra rows of the accuracy table and dashed lines of the accuracy plots (name -> {labels: accuracy});
    margins: equivalence margins declared per comparison (name -> fraction), tested in numbers.md."""
    from inas_jax.report.plots import write_plots

    os.makedirs(out, exist_ok=True)
    return write_plots(group_runs(runs), out, references) + write_text(runs, out, references, margins)


def parse_reference(text: str) -> tuple[str, dict[int, float]]:
    """'ResNet-18=1000:0.47,2000:0.58' -> ('ResNet-18', {1000: 0.47, 2000: 0.58})."""
    name, _, values = text.rpartition("=")
    try:
        points = {int(n): float(a) for n, a in (item.split(":") for item in values.split(","))}
    except ValueError:
        points = {}
    if not name or not points:
        raise ReportError(f"--reference={text!r}: expected NAME=LABELS:ACCURACY,... e.g. ResNet-18=1000:0.47")
    return name, points


def parse_margin(text: str) -> tuple[str, float]:
    """'random: iNAS - A(1,2)=0.01' -> ('random: iNAS - A(1,2)', 0.01): a comparison and its declared
    equivalence margin, a fraction of accuracy in (0, 1)."""
    name, _, value = text.rpartition("=")
    try:
        margin = float(value)
    except ValueError:
        margin = 0.0
    if not name.strip() or not 0 < margin < 1:
        raise ReportError(f"--equivalence={text!r}: expected COMPARISON=MARGIN with a margin in (0, 1), "
                          "e.g. 'random: iNAS - A(1,2)=0.01'")
    return name.strip(), margin


def _arguments(argv: list[str]):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m inas_jax.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="workdirs, results.json files, or globs of them")
    parser.add_argument("--out", default="report", help="output directory")
    parser.add_argument("--reference", action="append", default=[],
                        help="NAME=LABELS:ACCURACY,... an extra row of the accuracy table (e.g. a published "
                             "baseline); repeatable")
    parser.add_argument("--equivalence", action="append", default=[],
                        help="COMPARISON=MARGIN, e.g. 'random: iNAS - A(1,2)=0.01': a declared equivalence "
                             "margin of that AUC difference, tested by two one-sided paired t-tests at 5% in "
                             "numbers.md; repeatable")
    return parser.parse_args(argv)


def _checked_input(args) -> tuple[list[dict], dict, dict[str, dict[int, float]], dict[str, float]]:
    """(runs, groups, references, margins) of the command line, with --out created; raises ReportError."""
    references = dict(parse_reference(text) for text in args.reference)
    margins = dict(parse_margin(text) for text in args.equivalence)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ReportError(f"--out={args.out!r} exists and is not a directory")
    runs = load_runs(args.runs)
    if not runs:
        raise ReportError("no run has a completed round")
    groups = group_runs(runs)
    names = sorted({c.name for c in comparisons(groups)})
    unknown = sorted(set(margins) - set(names))
    if unknown:
        raise ReportError(f"--equivalence names {unknown[0]!r}, which is not a comparison of these runs "
                          f"(they have: {', '.join(names) or 'none'})")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise ReportError(f"--out={args.out!r} cannot be created: {err.strerror}") from None
    return runs, groups, references, margins


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    try:
        runs, groups, references, margins = _checked_input(args)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in uneven_rounds(groups):
        print(f"warning: {warning}", file=sys.stderr)
    for path in write_report(runs, args.out, references, margins):
        print(path)
    return 0


def run() -> None:
    """The console entry point `inas-jax-report`."""
    sys.exit(main(sys.argv[1:]))

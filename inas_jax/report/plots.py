"""The report's figures (PNG): learning curves per strategy and per query, iNAS's architectures, and
accuracy against cumulative compute. matplotlib is imported inside the functions, so that importing
the report stays light."""
from __future__ import annotations


from inas_jax.model.search_space import Arch
from inas_jax.report.checking import safe_name, write_file
from inas_jax.report import statistics as st


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_lines(ax, items, title, references: dict[str, dict[int, float]] | None = None):
    """Mean +- sd curves of each (name, runs) in `items`, and references (name -> {labels: accuracy})
    as dashed grey lines."""
    for name, runs in items:
        labels, mean, std = st.curve(runs)
        ax.plot(labels, mean, marker="o", ms=3, label=f"{name} (n={len(runs)})")
        ax.fill_between(labels, mean - std, mean + std, alpha=0.2)
    for name, values in (references or {}).items():
        points = sorted(values.items())
        ax.plot([n for n, _ in points], [a for _, a in points], "--", color="grey", marker="x", ms=4, label=name)
    ax.set(xlabel="labelled points", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()


def file_part(value: str) -> str:
    """A strategy or query as part of a file name: A(2,4) -> A2x4, others reduced to a safe name."""
    return "A" + Arch.parse(value).slug if value.startswith("A(") else safe_name(value)


def save(fig, out: str, name: str) -> str:
    """Writes a matplotlib figure to out/name (never through a link), closes it, returns the path."""
    fig.tight_layout()
    path = write_file(out, name, lambda f: fig.savefig(f, dpi=110, format="png"))
    _pyplot().close(fig)
    return path


def _datasets(groups) -> list[str]:
    return sorted({k[0] for k in groups})


def _most_strategies(groups, query: str) -> int:
    """The most strategies `query` ran under in one dataset."""
    return max(len({k[1] for k in groups if k[0] == d and k[2] == query}) for d in _datasets(groups))


def accuracy_figures(groups, out: str, references=None) -> list[str]:
    """curves_<strategy>.png (one line per query) and, for a query run under more than one strategy,
    compare_<query>.png (one line per strategy; a query of one strategy is a line of its curves_
    figure already), a panel per dataset; returns the paths written."""
    plt, datasets, written = _pyplot(), _datasets(groups), []
    for key_index, prefix in ((1, "curves"), (2, "compare")):
        for value in sorted({k[key_index] for k in groups}):
            if prefix == "compare" and _most_strategies(groups, value) < 2:
                continue
            fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
            for ax, dataset in zip(axes[0], datasets):
                items = sorted((k[3 - key_index], v) for k, v in groups.items()
                               if k[0] == dataset and k[key_index] == value)
                plot_lines(ax, items, f"{dataset}: {value}", references)
            written.append(save(fig, out, f"{prefix}_{file_part(value)}.png"))
    return written


def architecture_figure(groups, out: str) -> str | None:
    """architectures.png: iNAS's total blocks and parameters per round of every run; None without iNAS runs."""
    inas = [(k, v) for k, v in sorted(groups.items()) if k[1] == "iNAS"]
    if not inas:
        return None
    fig, (ax1, ax2) = _pyplot().subplots(1, 2, figsize=(12, 4.5))
    for (dataset, _, query), runs in inas:
        for i, run in enumerate(runs):
            labels = [r["num_labelled"] for r in run["rounds"]]
            blocks = [r["arch"][0] * r["arch"][1] for r in run["rounds"]]
            name = f"{dataset} {query} seed {run['config']['seed']}"
            ax1.plot(labels, blocks, marker="o", ms=3, alpha=0.8, label=name)
            if i == 0:  # one seed's names keep the panel readable; summary.md lists every run's
                for x, y, r in zip(labels, blocks, run["rounds"]):
                    ax1.annotate(str(Arch.from_json(r["arch"])), (x, y), fontsize=7, alpha=0.7)
            ax2.plot(labels, [r["num_params"] for r in run["rounds"]], marker="o", ms=3, alpha=0.8, label=name)
    ax1.set(xlabel="labelled points", ylabel="total blocks (blocks x stacks)", title="architecture chosen by iNAS")
    ax2.set(xlabel="labelled points", ylabel="trainable parameters", yscale="log", title="model size")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    return save(fig, out, "architectures.png")


def compute_figure(groups, out: str) -> str | None:
    """compute.png: test accuracy against cumulative CPU hours of every curve whose runs record
    cpu_seconds; None when none does."""
    costed = [(k, v, st.cumulative_cpu_hours(v)) for k, v in sorted(groups.items())]
    costed = [c for c in costed if c[2] is not None]
    if not costed:
        return None
    datasets = _datasets(groups)
    fig, axes = _pyplot().subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for (d, strategy, query), group, hours in costed:
            if d == dataset:
                ax.plot(hours, st.curve(group)[1], marker="o", ms=3, label=f"{strategy} {query} (n={len(group)})")
        ax.set(xlabel="cumulative CPU hours (search + training + queries)", ylabel="test accuracy",
               title=f"{dataset}: accuracy against compute")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, out, "compute.png")


def write_plots(groups, out: str, references=None) -> list[str]:
    """Every figure of the report into `out`; returns the paths written."""
    written = accuracy_figures(groups, out, references)
    return written + [p for p in (architecture_figure(groups, out), compute_figure(groups, out)) if p]

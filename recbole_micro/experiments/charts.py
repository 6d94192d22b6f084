"""A comparison's chart: every seed as a point beside its row's mean, and the paired differences."""
import re

import numpy as np

from recbole_micro.experiments.tables import TABLE_METRICS, metric_title, summarize


def model_colors(n):
    """n distinct bar colours: tab10 up to 10 models, tab20 up to 20, then evenly spaced hues.

    Matplotlib's default cycle repeats after 10, which would give two rows of Table 4 one colour.
    """
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](k) for k in range(n)]
    if n <= 20:
        return [colormaps["tab20"](k) for k in range(n)]
    return [colormaps["hsv"](k / n) for k in range(n)]




def difference_title(metric, reference, width=34):
    """The paired-difference panel's title, the reference's label wrapped after its commas to
    ``width`` characters a line, so that a long label (``MICRO:cl_anchors=batch,learning_rate=...``)
    stays above its own panel instead of running over the next one."""
    lines, line = [f"{metric_title(metric)} per seed, minus"], ""
    for part in re.split(r"(?<=,)", reference):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join(lines + [line])


def _dot_panel(ax, y, names, values, colors, title):
    """Row k at height y[k]: its values as dots and their mean as a black tick (rows without values skipped)."""
    for k, model in zip(y, names):
        if values.get(model):
            ax.scatter(values[model], [k] * len(values[model]), s=14, color=colors[model], alpha=0.8, zorder=3)
            ax.plot([np.mean(values[model])] * 2, [k - 0.32, k + 0.32], color="black", lw=1.6, zorder=4)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labelsize=7)
    ax.margins(x=0.15)


def plot_comparison(rows, models, path, metrics=TABLE_METRICS, split="test", reference=None):
    """One panel per metric (every seed a point, the mean a bar tick, the axis fitted to the data)
    and a panel of paired differences from ``reference`` in test Recall@20 (per seed, and the mean).

    Rows are the same across the panels, one colour each. Differences are paired by seed: runs
    with one seed share the data split, so a row whose points all lie left of zero is behind the
    reference in every seed.
    """
    plt = pyplot()
    stats = summarize(rows, models, metrics, split)
    names = list(stats)
    runs = {(r["model"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    colors = dict(zip(names, model_colors(len(names))))
    paired = reference in stats and len(names) > 1
    panels = len(metrics) + paired
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels + 1.6, 0.42 * len(names) + 1.4), sharey=True,
                             squeeze=False)
    axes = axes[0]
    y = np.arange(len(names))[::-1]
    for ax, metric in zip(axes, metrics):
        values = {model: [float(runs[(model, s)][f"{split}_{metric}"]) for s in seeds if (model, s) in runs]
                  for model in names}
        _dot_panel(ax, y, names, values, colors, metric_title(metric))
    if paired:
        metric = metrics[0]
        diffs = {model: [float(runs[(model, s)][f"{split}_{metric}"]) - float(runs[(reference, s)][f"{split}_{metric}"])
                         for s in seeds if (model, s) in runs and (reference, s) in runs]
                 for model in names if model != reference}
        _dot_panel(axes[-1], y, names, diffs, colors, difference_title(metric, reference))
        axes[-1].axvline(0, color="grey", lw=0.8)
    axes[0].set_yticks(y, names, fontsize=7)
    fig.suptitle(f"{split}: each seed a dot, the mean a black tick ({len(seeds)} seed{'s' * (len(seeds) > 1)})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

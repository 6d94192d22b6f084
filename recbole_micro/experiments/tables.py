"""A comparison's tables: ``table.md`` (the papers' Table 4 form, mean ± std over seeds) and
``seeds.md`` (paired per-seed differences), and ``runs.csv``.
"""

import numpy as np

from recbole_micro.experiments.records import parse_model_spec

TABLE_METRICS = ("recall@20", "precision@20", "ndcg@20")  # the papers' Table 4 columns


DEFAULT_BASELINES = ("ItemKNN", "BPR", "NGCF", "LightGCN", "SGL", "VBPR")


DEFAULT_PROPOSED = ("MICRO",)


def summarize(rows, models, metrics=TABLE_METRICS, split="test"):
    """{model: {metric: (mean, sample std, n)}} over the seeds, for the models that have runs."""
    table = {}
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        if mine:
            table[model] = {}
            for m in metrics:
                values = np.array([float(r[f"{split}_{m}"]) for r in mine])
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0  # sample std over seeds
                table[model][m] = (float(values.mean()), std, len(values))
    return table


def comparison_table(rows, models, proposed=DEFAULT_PROPOSED, metrics=TABLE_METRICS, split="test"):
    """The papers' Table 4 in Markdown: best mean in bold, second underlined, and the improvement.

    The last row is (best proposed - best baseline) / best baseline per metric. A row is
    proposed when its model name (without ``:settings``) is in ``proposed``, so variants of a
    proposed model are never its baselines; the baselines are all the other rows. While the
    models have different numbers of finished seeds, each row says its number.
    """
    stats = summarize(rows, models, metrics, split)
    seeds = {model: cells[metrics[0]][2] for model, cells in stats.items()}
    uneven = len(set(seeds.values())) > 1
    ranked = {m: sorted({round(s[m][0], 4) for s in stats.values()}, reverse=True) for m in metrics}
    header = "| Model | " + " | ".join(metric_title(m) for m in metrics) + " |"
    lines = [header, "|---|" + "---:|" * len(metrics)]
    for model, cells in stats.items():
        out = []
        for m in metrics:
            mean, std, n = cells[m]
            text = f"{mean:.4f}" + (f" ± {std:.4f}" if n > 1 else "")
            if round(mean, 4) == ranked[m][0]:
                text = f"**{text}**"
            elif len(ranked[m]) > 1 and round(mean, 4) == ranked[m][1]:
                text = f"<u>{text}</u>"
            out.append(text)
        label = f"{model} ({seeds[model]} seed{'s' if seeds[model] > 1 else ''})" if uneven else model
        lines.append(f"| {label} | " + " | ".join(out) + " |")
    ours = [m for m in stats if is_proposed(m, proposed)]
    baselines = [m for m in stats if m not in ours]
    if ours and baselines:
        cells = []
        for m in metrics:
            best_ours = max(stats[o][m][0] for o in ours)
            best_base = max(stats[b][m][0] for b in baselines)
            cells.append(f"{100 * (best_ours - best_base) / best_base:+.2f}%" if best_base > 0 else "n/a")
        lines.append("| Improv. | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def is_proposed(model, proposed):
    """Whether a row is a proposed model or a variant of one (``MICRO:use_specific=False``)."""
    return model in proposed or parse_model_spec(model)[0] in proposed


def first_proposed(rows, models, proposed):
    """The first row in ``models`` that has runs and is proposed (see :func:`is_proposed`)."""
    present = {r["model"] for r in rows}
    return next((m for m in models if m in present and is_proposed(m, proposed)), None)


def seed_table(rows, models, reference=None, metric="recall@20", split="test"):
    """One metric seed by seed in Markdown, with each row's paired difference from ``reference``.

    Columns: the value at every seed (blank where that run is missing), mean ± sample std, and
    (when ``reference`` has runs) the row's difference from ``reference`` at each seed both have,
    then the mean of those differences. The seeds are the union over ``models``, in order.
    """
    runs = {(r["model"], r["seed"]): float(r[f"{split}_{metric}"]) for r in rows if r["model"] in models}
    seeds = sorted({seed for _, seed in runs})
    stats = summarize(rows, models, (metric,), split)
    present = list(stats)
    paired = reference in present
    header = "| Model | " + " | ".join(f"seed {s}" for s in seeds) + f" | mean {split} {metric} |"
    rule = "|---|" + "---:|" * (len(seeds) + 1)
    if paired:
        header += f" − {reference}, per seed | mean − {reference} |"
        rule += "---|---:|"
    lines = [header, rule]
    for model in present:
        values = [runs.get((model, s)) for s in seeds]
        mean, std, n = stats[model][metric]
        summary = f"{mean:.4f}" + (f" ± {std:.4f}" if n > 1 else " (1 seed)")
        line = f"| {model} | " + " | ".join("" if v is None else f"{v:.4f}" for v in values) + f" | {summary} |"
        if paired:
            diffs = [runs[(model, s)] - runs[(reference, s)] for s in seeds
                     if (model, s) in runs and (reference, s) in runs]
            if model == reference or not diffs:
                line += " | |"
            else:
                line += " " + ", ".join(f"{d:+.4f}" for d in diffs) + f" | {np.mean(diffs):+.4f} |"
        lines.append(line)
    return "\n".join(lines)


def metric_title(metric):
    """'recall@20' -> 'Recall@20': the name in the table's header and the chart's panels."""
    return metric.replace("recall", "Recall").replace("ndcg", "NDCG").replace("precision", "Precision")

"""Hyperparameter tuning through RecBole's ``HyperTuning`` with our objective, and sweep plots.

A params file has one line per hyperparameter, in RecBole's format::

    learning_rate choice [1e-4,5e-4,1e-3,5e-3]
    lambda_coeff uniform 0,1
    reg_weight loguniform -11.5,-4.6

Values that are lists or dicts must be quoted strings inside the list, e.g.
``use_modalities choice ['["visual"]','["textual"]','[]']`` (RecBole parses the string again).

:func:`run_tuning` writes to ``out_dir``: ``trials.csv`` (every point with every valid and
test metric), RecBole's own ``hyper_result.txt``, ``best.yaml`` (the best point, ready for
``--config_files``), and per tuned parameter ``sensitivity-<param>.csv`` and ``.png`` (the
papers' Figures 4-6 form: metric against the parameter, averaged over the other parameters;
with a single-parameter params file it is exactly the sweep).
"""
import json
from pathlib import Path

import numpy as np

from recbole_micro.experiments.charts import pyplot
from recbole_micro.experiments.reports import write_fixed_yaml, write_rows_csv
from recbole_micro.quick_start import metric_columns
from recbole_micro.registry import find_params_file

SENSITIVITY_METRICS = ("recall@20", "ndcg@20")


def read_params_file(params_file):
    """(name, kind, value) per parameter line of a RecBole params file, in order.

    Like RecBole's parser, a line needs at least three space-separated fields and the value is
    the rest of the line with its spaces removed.
    """
    lines = []
    for line in Path(params_file).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.lstrip().startswith("#"):
            lines.append((parts[0], parts[1], "".join(parts[2:])))
    return lines


def params_in_file(params_file):
    """The parameter names of a RecBole params file, in order."""
    return [name for name, _, _ in read_params_file(params_file)]


def run_tuning(params_file, model, dataset, out_dir, algo="exhaustive", max_evals=100, early_stop=None,
               config_file_list=None, log=print):
    """Tune ``model`` on ``dataset`` over ``params_file`` and write the results.

    Args:
        params_file (str): RecBole params file (see the module docstring): a path, or the name of a
            shipped one such as ``MICRO`` or ``sensitivity/MICRO-knn_k`` (:func:`~recbole_micro.registry.find_params_file`).
        algo (str): ``exhaustive``, ``random`` or ``bayes`` (hyperopt's TPE).
        max_evals (int): points to try for random / bayes (exhaustive tries all).
        early_stop (int): stop after this many points without improvement (default: never).
        config_file_list (list of str): YAMLs applied to every point.

    Returns:
        recbole.trainer.HyperTuning: the finished tuner (``best_params``, ``params2result``).
    """
    from recbole.trainer import HyperTuning

    from recbole_micro.quick_start import objective_function

    params_file = find_params_file(params_file)
    names = params_in_file(params_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = write_fixed_yaml(out_dir, model, dataset)
    trials = []

    def objective(config_dict, fixed_config_file_list=None):
        result = objective_function(config_dict, fixed_config_file_list)
        point = {name: config_dict.get(name) for name in names}
        trials.append({**point, "best_valid_score": result["best_valid_score"], **metric_columns(result)})
        log(f"{json.dumps(point)}: valid {result['best_valid_score']:.4f}")
        return result

    tuner = HyperTuning(objective, algo=algo, params_file=str(params_file),
                        fixed_config_file_list=[str(fixed)] + list(config_file_list or []),
                        max_evals=max_evals, early_stop=early_stop or 10 ** 9)
    tuner.run()
    tuner.export_result(output_file=str(out_dir / "hyper_result.txt"))
    write_rows_csv(trials, out_dir / "trials.csv")
    write_best_yaml(tuner.best_params, out_dir / "best.yaml")
    for name in names:
        if len({str(t[name]) for t in trials}) > 1:
            rows = sensitivity_rows(trials, name)
            write_rows_csv(rows, out_dir / f"sensitivity-{name}.csv")
            plot_sensitivity(rows, name, out_dir / f"sensitivity-{name}.png", title=f"{model} on {dataset}")
    return tuner


def write_best_yaml(best_params, path):
    """The best point as a YAML settings file (comment line first)."""
    import yaml

    clean = {k: v.item() if hasattr(v, "item") else v for k, v in (best_params or {}).items()}
    path.write_text("# best point of the tuning run; reuse with --config_files\n" + yaml.safe_dump(clean, sort_keys=False))


def sensitivity_rows(trials, param, metrics=SENSITIVITY_METRICS, split="test"):
    """Metric against ``param``: per distinct value, the mean over the points that have it."""
    def key(value):
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(value))

    groups = {}
    for trial in trials:
        value = trial[param]
        groups.setdefault(value if isinstance(value, (int, float, str)) else json.dumps(value), []).append(trial)
    rows = []
    for value in sorted(groups, key=key):
        mine = groups[value]
        row = {param: value, "points": len(mine)}
        for m in metrics:
            row[f"{split}_{m}"] = float(np.mean([float(t[f"{split}_{m}"]) for t in mine]))
        rows.append(row)
    return rows


def plot_sensitivity(rows, param, path, metrics=SENSITIVITY_METRICS, split="test", title=None):
    """Metric against a hyperparameter (one line per metric), as PNG: the papers' Figures 4-6."""
    plt = pyplot()
    labels = [str(r[param]) for r in rows]
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for m in metrics:
        ax.plot(range(len(rows)), [float(r[f"{split}_{m}"]) for r in rows], marker="o", label=m)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel(param)
    ax.set_ylabel(f"{split} metric")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ray_search_space(params_file):
    """A RecBole params file as a Ray Tune search space (the same four kinds of line).

    RecBole's ``loguniform low,high`` gives the bounds in natural log (hyperopt's convention);
    Ray's takes the values themselves, so they are exponentiated.
    """
    from ray import tune

    space = {}
    for name, kind, value in read_params_file(find_params_file(params_file)):
        if kind == "choice":
            space[name] = tune.choice(eval(value))  # RecBole's format: a Python list literal
        elif kind == "uniform":
            low, high = (float(v) for v in value.split(","))
            space[name] = tune.uniform(low, high)
        elif kind == "quniform":
            low, high, q = (float(v) for v in value.split(","))
            space[name] = tune.quniform(low, high, q)
        elif kind == "loguniform":
            low, high = (float(v) for v in value.split(","))
            space[name] = tune.loguniform(float(np.exp(low)), float(np.exp(high)))
        else:
            raise ValueError(f"{params_file}: unknown kind {kind!r} for {name!r}")
    return space


def _ray_trial(config, config_file_list=None):
    from recbole_micro.quick_start import objective_function

    objective_function(dict(config), config_file_list)  # reports to Ray itself


def run_ray_tuning(params_file, model, dataset, out_dir, num_samples=4, cpus_per_trial=1, gpus_per_trial=0,
                   config_file_list=None):
    """RecBole's Ray Tune path with our objective, for clusters: one trial per sampled point.

    Every trial reports its best validation score as ``valid_score`` (the config's
    ``valid_metric``, higher is better as in our YAMLs), on which Ray selects the best trial and
    ``best.yaml``; its ``valid_*`` and ``test_*`` metrics ride along for reading only. Each trial
    runs in a Ray worker whose working directory is the trial's folder, so give absolute paths.

    Returns:
        ray.tune.ExperimentAnalysis: the finished experiment.
    """
    from ray import tune

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = write_fixed_yaml(out_dir, model, dataset)
    files = [str(fixed)] + [str(Path(f).resolve()) for f in (config_file_list or [])]
    analysis = tune.run(
        tune.with_parameters(_ray_trial, config_file_list=files),
        config=ray_search_space(params_file), num_samples=num_samples, metric="valid_score", mode="max",
        resources_per_trial={"cpu": cpus_per_trial, "gpu": gpus_per_trial}, local_dir=str(out_dir / "ray"),
        verbose=0,
    )
    write_best_yaml(analysis.best_config, out_dir / "best.yaml")
    return analysis

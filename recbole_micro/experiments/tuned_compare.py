"""A fair comparison: every model tuned on validation with the same budget, then run on every seed.

:func:`run_tuned_comparison` first tunes each row of the comparison over a grid, one full run
(to early stopping) per grid point with the first seed, and keeps the point with the best
**validation** score; the test split is recorded but never looked at by the selection. Then
each row runs at its chosen point on every seed through :func:`~recbole_micro.experiments.compare.run_comparison`;
a row whose every grid point is tried runs on the other seeds while other rows are still tuning
(after their tuning runs in the queue), so no worker idles, or stops at a deadline, while one fits.
The grid is each model's ``hyper/<Model>.hyper`` (its ``choice`` lines) or one shared grid for
all rows (``--tune-grid "learning_rate=5e-4,1e-3,5e-3 reg_weight=1e-5,1e-4,1e-3"``).

Written to ``out_dir`` besides the comparison's files: ``tuning.jsonl`` (one line per tried
point: what makes tuning resumable), ``chosen.json`` (each row's chosen settings, validation
score and budget; the rows of earlier commands on the same folder that this one does not
compare are kept) and ``tuning.md`` (the same as a table, and the budget); ``table.md`` ends
with each row's chosen settings.

Each tuning run is also the comparison's run of that point with the first seed (same settings,
same seed: the same result), recorded as one with its config and log, so the chosen point does
not run twice; a tuning run interrupted mid-way resumes from its last epoch, as comparison runs
do. Several workers may run the same command on one ``out_dir`` at once: they share the runs
(see :mod:`recbole_micro.experiments.claims`).
"""
import ast
import itertools
import json
from pathlib import Path

from recbole_micro.errors import ModelSpecError
from recbole_micro.experiments.compare import (
    diagnose_recorded_run,
    parse_model_spec,
    run_comparison,
    run_one,
    run_shared,
)
from recbole_micro.experiments.records import read_jsonl, read_runs, run_name
from recbole_micro.experiments.reports import Progress
from recbole_micro.experiments.tables import DEFAULT_PROPOSED
from recbole_micro.files import write_atomically
from recbole_micro.registry import hyper_dir as shipped_hyper_dir
from recbole_micro.quick_start import metric_columns


def parse_grid(text):
    """``"learning_rate=5e-4,1e-3 reg_weight=1e-5,1e-4"`` -> {name: [values]} (values read as Python literals)."""
    grid = {}
    for part in text.split():
        name, sep, values = part.partition("=")
        if not sep or not name or not values:
            raise ModelSpecError(f"--tune-grid {part!r}: write name=v1,v2,..., e.g. learning_rate=5e-4,1e-3,5e-3")
        try:
            grid[name] = [ast.literal_eval(v) for v in values.split(",")]
        except (ValueError, SyntaxError):
            raise ModelSpecError(f"--tune-grid {part!r}: the values must be numbers, strings or booleans") from None
    return grid


def read_hyper_grid(path):
    """{name: [values]} from the ``choice`` lines of a RecBole params file (exhaustive search needs choices)."""
    from recbole_micro.experiments.tune import read_params_file

    grid = {}
    for name, kind, value in read_params_file(path):
        if kind != "choice":
            raise ModelSpecError(f"{path}: {name} is '{kind}'; a tuned comparison tries every point, so each "
                                 "line must be 'choice [...]' (or give one grid with --tune-grid).")
        grid[name] = list(ast.literal_eval(value))
    return grid


def grids_for(models, hyper_dir, shared_grid=None):
    """{row: grid} for every row: the shared grid, or ``<hyper_dir>/<Model>.hyper``; all checked before any run."""
    grids, missing = {}, []
    for model in models:
        path = Path(hyper_dir) / f"{parse_model_spec(model)[0]}.hyper"
        if shared_grid is not None:
            grids[model] = shared_grid
        elif path.is_file():
            grids[model] = read_hyper_grid(path)
        else:
            missing.append(str(path))
    if missing:
        raise ModelSpecError(f"No grid for {', '.join(missing)}: write it, or give one grid for every row with "
                             "--tune-grid \"learning_rate=5e-4,1e-3,5e-3 reg_weight=1e-5,1e-4,1e-3\".")
    for model, grid in grids.items():
        check_label_values(model, grid)
    return grids


def check_label_values(model, grid):
    """Refuse a grid value that the row label would not give back as it is (None, a list, a comma in a string).

    The chosen point runs again on the other seeds from its row label, and its tuning run is
    reused as the first seed's: the two must get the same settings.
    """
    for name, values in grid.items():
        for value in values:
            try:
                back = parse_model_spec(_with_point(model, {name: value}))[1].get(name)
            except Exception:  # yaml's own errors, for a value that is not a scalar
                back = object()
            if back != value or type(back) is not type(value):
                raise ModelSpecError(f"{model}: the grid value {name}={value!r} cannot be written in a row label "
                                     "and read back as it is; use numbers, booleans or strings without commas.")


def grid_points(grid):
    """Every point of ``grid`` as a dict, in a fixed order."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def point_key(point):
    return json.dumps(point, sort_keys=True)


def grid_trials(trials, grid):
    """One trial per point of ``grid`` (the first tried of each), in the grid's order; other points are dropped.

    Workers finish in no fixed order, and validation scores are rounded (RecBole's
    ``metric_decimal_place``), so ties happen: in the grid's order :func:`choose` picks the same
    point whichever worker finished first.
    """
    first = {}
    for trial in trials:
        first.setdefault(point_key(trial["point"]), trial)
    return [first[key] for key in map(point_key, grid_points(grid)) if key in first]


def choose(trials, bigger=True):
    """The trial with the best validation score (ties: the first in the list). Test metrics are never read."""
    best = None
    for trial in trials:
        score = trial["best_valid_score"]
        if best is None or (score > best["best_valid_score"] if bigger else score < best["best_valid_score"]):
            best = trial
    return best


def read_trials(out_dir):
    return read_jsonl(Path(out_dir) / "tuning.jsonl")


def read_chosen(out_dir):
    """``out_dir/chosen.json`` ({row: chosen trial}); {} when there is none or it cannot be read
    (it is derived from ``tuning.jsonl``, so nothing is lost by writing it again)."""
    try:
        chosen = json.loads((Path(out_dir) / "chosen.json").read_text())
    except (OSError, ValueError):
        return {}
    return chosen if isinstance(chosen, dict) else {}


def run_tuned_comparison(models, dataset, seeds, out_dir, grid=None, hyper_dir=None, config_file_list=None,
                         config_dict=None, proposed=None, log=print, diagnose=False, deadline=None):
    """Tune every row on validation with its grid (first seed), then compare the chosen points over ``seeds``.

    Args:
        models (list of str): the rows (model names, optionally ``MODEL:key=value,...``).
        grid (dict): one grid for every row ({name: [values]}); None reads ``<hyper_dir>/<Model>.hyper``.
        hyper_dir (str or Path): the folder of the grids; None: the shipped ``hyper/`` (:func:`~recbole_micro.registry.hyper_dir`).
        Other arguments as :func:`~recbole_micro.experiments.compare.run_comparison`.

    Returns:
        tuple: (the comparison's rows, {row: chosen trial}).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "configs"):
        (out_dir / sub).mkdir(exist_ok=True)
    grids = grids_for(models, shipped_hyper_dir() if hyper_dir is None else hyper_dir, grid)
    unused = unused_grid_settings(grids)
    for model, keys in unused.items():
        if keys:
            log(f"{model} does not use {', '.join(keys)}: tuned over the rest of the grid only")
    grids = {m: {k: v for k, v in grids[m].items() if k not in unused[m]} for m in models}
    tune_seed = seeds[0]

    def used(model, point):  # a point as the run sees it (a trial from before the check may hold more)
        return {k: v for k, v in point.items() if k not in unused.get(model, ())}  # rows gone from the list: as tried

    points = [(m, p) for m in models for p in grid_points(grids[m])]
    done = {(t["model"], point_key(used(t["model"], t["point"]))) for t in read_trials(out_dir)}
    todo = [(m, p) for m, p in points if (m, point_key(p)) not in done]

    def choice(model, trials):
        """The row's chosen trial over its grid points tried so far (None if none is)."""
        mine = grid_trials([dict(t, point=used(model, t["point"])) for t in trials if t["model"] == model],
                           grids[model])
        return dict(choose(mine, bigger=mine[0]["valid_score_bigger"]), budget=len(mine),
                    unused=unused[model]) if mine else None

    # A row whose every grid point is tried has its choice settled: its runs on the other seeds are
    # open now, after the tuning runs, so a worker with no tuning run free (or none that fits the
    # deadline) runs one of them rather than wait.
    trials, recorded = read_trials(out_dir), read_runs(out_dir)
    settled = {m: c for m in models if (c := choice(m, trials)) and c["budget"] == len(grid_points(grids[m]))}
    labels = {m: _with_point(m, c["point"]) for m, c in settled.items()}  # the settled rows' comparison rows
    finished = {(r["model"], r["seed"]) for r in recorded}
    early = [(labels[m], seed) for seed in seeds[1:] for m in models
             if m in labels and (labels[m], seed) not in finished]
    later = [m for m in models if m not in settled for _ in seeds[1:]]  # the comparison's runs, by row
    progress = Progress(len(todo) + len(early) + len(later), log)
    for t in trials:  # how long each row's runs took, earlier starts' included
        progress.add_timings(t["model"], [t["seconds"]])
    for m, label in labels.items():  # a settled row's runs are timed at its chosen point's, not its grid's mean
        progress.add_timings(label, [r["seconds"] for r in recorded if r["model"] == label and "seconds" in r]
                             or [settled[m]["seconds"]])
    log(f"Tuning {len(models)} rows on validation (seed {tune_seed}): {len(todo)} runs to go; "
        f"then {len(models)} rows x {len(seeds)} seeds (the first from tuning)"
        + (f"; {len(early)} of those runs, of the {len(settled)} rows tuned already, are open now" if early else ""))

    def tune(model, point):
        """One grid point, run and recorded as the comparison's run of that point with the first seed."""
        label = _with_point(model, point)
        row, result = run_one(out_dir, label, tune_seed, dataset, config_file_list, config_dict, log)
        trial = {"model": model, "point": point, "seed": tune_seed, "seconds": row["seconds"],
                 "best_valid_score": result["best_valid_score"], "valid_score_bigger": result["valid_score_bigger"],
                 **metric_columns(result)}
        with open(out_dir / "tuning.jsonl", "a") as f:
            f.write(json.dumps(trial) + "\n")
        if diagnose:  # after the trial is kept: a worker killed while diagnosing loses no run
            diagnose_recorded_run(out_dir, label, tune_seed, row, log)
        progress.finished(f"tuning {model} at {point}", result, row=model, seconds=row["seconds"])

    def run(job):
        if job[0] == "tune":
            tune(*job[1:])
        else:  # a settled row on another seed: the comparison's run, as run_comparison would make it
            _, label, seed = job
            row, result = run_one(out_dir, label, seed, dataset, config_file_list, config_dict, log, diagnose)
            progress.finished(f"{label} seed {seed}", result, row=label, seconds=row["seconds"])

    def done_now():  # a tuning run counts once its trial is kept; a run on another seed, once recorded
        trials = read_trials(out_dir)
        tuned = {run_name(_with_point(t["model"], used(t["model"], t["point"])), tune_seed) for t in trials}
        return tuned | {run_name(r["model"], r["seed"]) for r in read_runs(out_dir) if r["seed"] != tune_seed}

    jobs = ([(run_name(_with_point(m, p), tune_seed), ("tune", m, p)) for m, p in todo]
            + [(run_name(label, seed), ("seed", label, seed)) for label, seed in early])
    # a job's row (job[1]): its model while tuning, its chosen point's row on another seed
    run_shared(out_dir, jobs, done_now, run, log, progress, later, row_of=lambda job: job[1], deadline=deadline)
    for label in labels.values():  # run_comparison below times the chosen points again, from runs.jsonl
        progress.timings.pop(label, None)
    trials = read_trials(out_dir)
    chosen = {model: choice(model, trials) for model in models}
    kept = {m: c for m, c in read_chosen(out_dir).items() if m not in chosen}  # rows of other commands on this folder
    write_atomically(out_dir / "chosen.json",
                     lambda tmp: Path(tmp).write_text(json.dumps({**chosen, **kept}, indent=1)))
    table = tuning_table(chosen, grids, tune_seed) + "\n"
    write_atomically(out_dir / "tuning.md", lambda tmp: Path(tmp).write_text(table))
    rows = [_with_point(model, chosen[model]["point"]) for model in models]
    finished = {(r["model"], r["seed"]) for r in read_runs(out_dir)}
    progress.total = progress.done + sum((row, seed) not in finished for row in rows for seed in seeds)
    timed = {model for model, _ in finished}
    for model, row in zip(models, rows):  # chosen from a trial of an earlier version, with no run: the trial times it
        if row not in timed:
            progress.add_timings(row, [chosen[model]["seconds"]])
    results = run_comparison(rows, dataset, seeds, out_dir, config_file_list=config_file_list, config_dict=config_dict,
                             proposed=proposed or DEFAULT_PROPOSED, log=log, progress=progress,
                             notes=chosen_settings(chosen, tune_seed), diagnose=diagnose, deadline=deadline)
    return results, chosen


def unused_grid_settings(grids):
    """{row: the grid's settings its model does not use} (:func:`~recbole_micro.config.settings_not_used_by`).

    Their values would reach the model and change nothing, so each of their points would repeat
    one run; such a row is tuned over the rest of its grid, and ``tuning.md`` says so.
    """
    from recbole_micro.config import settings_not_used_by
    from recbole_micro.registry import get_model

    return {row: settings_not_used_by(get_model(parse_model_spec(row)[0]), list(grid)) for row, grid in grids.items()}


def _with_point(model, point):
    """The comparison row for ``model`` at ``point``: the spec with the chosen settings added."""
    name, overrides = parse_model_spec(model)
    settings = {**overrides, **point}
    return name + (":" + ",".join(f"{k}={v}" for k, v in settings.items()) if settings else "")


def _point_text(point):
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "its defaults (nothing to tune)"


def tuning_table(chosen, grids, seed):
    lines = [f"Each row tuned on validation (seed {seed}, one full run per point); test never used to choose.", "",
             "| Row | budget (points) | grid | chosen | valid score |", "|---|---:|---|---|---:|"]
    for model, trial in chosen.items():
        grid = ", ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grids[model].items()) or "none"
        if trial.get("unused"):
            grid += f" ({', '.join(trial['unused'])}: not used by {parse_model_spec(model)[0]})"
        lines.append(f"| {model} | {trial['budget']} | {grid} | {_point_text(trial['point'])} | {trial['best_valid_score']:.4f} |")
    return "\n".join(lines)


def chosen_settings(chosen, seed):
    lines = [f"Chosen on validation (seed {seed}), per row: budget, settings."]
    for model, trial in chosen.items():
        lines.append(f"- {model}: {trial['budget']} points; {_point_text(trial['point'])}")
    return "\n".join(lines)


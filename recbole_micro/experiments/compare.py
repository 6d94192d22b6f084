"""Side-by-side comparison: several models on one dataset under one protocol and several seeds.

Every (model, seed) is one full run of :func:`~recbole_micro.quick_start.run_recbole_micro`
with the same dataset, split, metrics and seeds. The results go to ``out_dir``:

- ``runs.jsonl``: one line per finished run (what makes the comparison resumable: a re-run
  skips the (model, seed) pairs already there);
- ``running.json``: the checkpoint of each run in progress, so that a run interrupted mid-way
  continues from its last evaluated epoch on the re-run (see :mod:`recbole_micro.trainer.trainer`);
- ``claims/``: the runs other workers on the same folder are running now (see
  :mod:`recbole_micro.experiments.claims`): start the same command twice and the two share the runs;
- ``runs.csv``: the same rows, every valid and test metric at every cut-off, with the run's
  time, its saved model, its log and its full config (``configs/<model>-seed<seed>.json``);
- ``logs/<model>-seed<seed>.log``: RecBole's log of the run;
- ``table.md``: the papers' Table 4 form, mean ± sample std over the seeds (best in bold, second
  underlined), with the relative improvement of the best proposed model over the best baseline;
- ``seeds.md``: test Recall@20 seed by seed, and each row's paired difference from the first
  proposed row (runs with the same seed share the data split, so the paired difference is
  the fair test of a gap smaller than the spread over seeds);
- ``diagnostics/<model>-seed<seed>.json`` (with ``diagnose``): graph quality, modality weights
  and losses of each MICRO and LATTICE run (see :mod:`recbole_micro.experiments.diagnostics`);
- ``chart.png``: one panel per metric with every seed as a point beside its row's mean (the axis
  fitted to the data), and a panel of paired differences from the first proposed row.
"""
import fcntl
import json
import re
import time
from pathlib import Path

from recbole_micro.errors import ModelSpecError, RunsStopped
from recbole_micro.experiments.charts import plot_comparison
from recbole_micro.experiments.records import (
    interrupted_run,
    mark_running,
    parse_model_spec,
    read_runs,
    record_run,
    run_name,
    running_entry,
)
from recbole_micro.experiments.reports import Progress, write_rows_csv
from recbole_micro.experiments.tables import DEFAULT_PROPOSED, comparison_table, first_proposed, seed_table
from recbole_micro.files import write_atomically


def run_comparison(models, dataset, seeds, out_dir, config_file_list=None, config_dict=None, proposed=DEFAULT_PROPOSED,
                   log=print, progress=None, notes="", diagnose=False, deadline=None):
    """Run every model with every seed (skipping finished pairs) and write the tables.

    Several workers may run the same comparison on one ``out_dir`` at once: each takes the next
    run no other worker holds (see :mod:`recbole_micro.experiments.claims`), and waits for the others' runs
    before writing the tables.

    Args:
        models (list of str): model names, ours or RecBole's, in table order; a name may carry
            settings for that row only, e.g. ``MICRO:use_specific=False`` (see :func:`parse_model_spec`).
        dataset (str): dataset name.
        seeds (list of int): seeds; each (model, seed) is one run.
        out_dir (str or Path): where runs, logs, configs, table and chart go.
        config_file_list (list of str): YAML files applied to every run.
        config_dict (dict): settings applied to every run (the seed is set per run).
        proposed (list of str): the models compared against the best of the others.
        progress (Progress): counts the runs (one line per run with the time left); a new one when None.
        notes (str): text appended to ``table.md``.
        diagnose (bool): diagnose every MICRO and LATTICE run after it ends (see :func:`run_one`).
        deadline (float): start only runs expected to end by then (see :func:`run_shared`).

    Returns:
        list of dict: every finished run (old and new).
    """
    out_dir = Path(out_dir)
    for sub in ("logs", "configs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    pairs = [(model, seed) for seed in seeds for model in models]
    recorded = read_runs(out_dir)
    finished = {(r["model"], r["seed"]) for r in recorded}
    for model, seed in pairs:
        if (model, seed) in finished:
            log(f"{model} seed {seed}: done before, skipped")
    if progress is None:
        progress = Progress(sum(pair not in finished for pair in pairs), log)
    for r in recorded:  # how long each row's runs took, earlier starts' included
        if r["model"] in models and "seconds" in r:
            progress.add_timings(r["model"], [r["seconds"]])

    if diagnose:  # runs recorded but not diagnosed (their worker was killed while diagnosing), while checkpoints last
        for r in recorded:
            diagnosed = (out_dir / "diagnostics" / f"{run_name(r['model'], r['seed'])}.json").is_file()
            kept = r.get("saved_model_file") and Path(r["saved_model_file"]).is_file()
            if (r["model"], r["seed"]) in pairs and kept and not diagnosed:
                diagnose_recorded_run(out_dir, r["model"], r["seed"], r, log)

    def run(pair):
        model, seed = pair
        row, result = run_one(out_dir, model, seed, dataset, config_file_list, config_dict, log, diagnose)
        progress.finished(f"{model} seed {seed}", result, row=model, seconds=row["seconds"])

    def done_now():
        return {run_name(r["model"], r["seed"]) for r in read_runs(out_dir)}

    run_shared(out_dir, [(run_name(*pair), pair) for pair in pairs], done_now, run, log, progress,
               row_of=lambda pair: pair[0], deadline=deadline)
    rows = [r for r in read_runs(out_dir) if r["model"] in models and r["seed"] in seeds]
    write_outputs(rows, models, out_dir, proposed, notes)
    return rows


def run_one(out_dir, model, seed, dataset, config_file_list=None, config_dict=None, log=print, diagnose=False):
    """One run of ``model`` (a spec) with ``seed``, resumed from its last epoch if it was interrupted, then recorded.

    With ``diagnose``, a model with item graphs (MICRO, LATTICE) is then diagnosed from its saved
    checkpoint and log (:func:`recbole_micro.experiments.diagnostics.diagnose_run`), into
    ``diagnostics/<model>-seed<seed>.json``: the checkpoint may be gone by the time the table is read.

    Returns:
        tuple: (its row in ``runs.jsonl``, the result of :func:`~recbole_micro.quick_start.run_recbole_micro`).
    """
    from recbole_micro.quick_start import run_recbole_micro

    start = time.time()
    model_name, overrides = parse_model_spec(model)
    resume = interrupted_run(out_dir, model, seed)
    if resume:
        log(f"{model} seed {seed}: resuming {resume}")
    result = run_recbole_micro(model=model_name, dataset=dataset, config_file_list=config_file_list,
                               config_dict={**(config_dict or {}), **overrides, "seed": seed}, resume=resume,
                               started=lambda checkpoint: mark_running(out_dir, model, seed, checkpoint))
    seconds = time.time() - start + result.get("seconds_before_resume", 0.0)  # a resumed run's earlier starts too
    row = record_run(out_dir, model, seed, dataset, result, seconds, running_entry(out_dir, model, seed)["logs"])
    mark_running(out_dir, model, seed, None)
    if diagnose:
        diagnose_recorded_run(out_dir, model, seed, row, log)
    return row, result


def diagnose_recorded_run(out_dir, model, seed, row, log):
    """The diagnosis of one recorded run of a model with item graphs; a failure is logged, and the run stays."""
    from recbole_micro.experiments.diagnostics import diagnose_run
    from recbole_micro.registry import get_model

    if not row["saved_model_file"] or not hasattr(get_model(parse_model_spec(model)[0]), "item_graphs"):
        return
    path = out_dir / "diagnostics" / f"{run_name(model, seed)}.json"
    path.parent.mkdir(exist_ok=True)
    try:
        found = diagnose_run(row["saved_model_file"], log=out_dir / row["log"] if row["log"] else None)
    except Exception as err:  # the run is recorded: a diagnosis that fails must not lose it
        found = {"error": f"{type(err).__name__}: {err}"}
        log(f"{model} seed {seed}: the diagnosis failed ({found['error']}); the run itself is recorded")
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(found, indent=1) + "\n"))


def parse_deadline(text, now=None):
    """``--deadline``: ``HH:MM`` (today, local time) or ``+2h30m`` / ``+90m`` from now -> seconds since the epoch."""
    import datetime

    now = time.time() if now is None else now
    relative = re.fullmatch(r"\+(?:(\d+)h)?(?:(\d+)m)?", text.strip())
    if relative and any(relative.groups()):
        hours, minutes = (int(g or 0) for g in relative.groups())
        return now + 3600 * hours + 60 * minutes
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if clock and int(clock[1]) < 24 and int(clock[2]) < 60:
        today = datetime.datetime.fromtimestamp(now)
        deadline = today.replace(hour=int(clock[1]), minute=int(clock[2]), second=0, microsecond=0).timestamp()
        if deadline <= now:
            raise ModelSpecError(f"--deadline {text}: that time has passed today; give a later time or +2h30m.")
        return deadline
    raise ModelSpecError(f"--deadline {text!r}: write HH:MM (today, local time) or +2h30m / +90m (from now).")


def run_shared(out_dir, jobs, done_now, run, log=print, progress=None, later=(), row_of=None, deadline=None):
    """Run every job not yet done, in order, sharing them with any other worker on ``out_dir``.

    Each job is claimed before it starts (another worker's live claim makes this one move on);
    when every job left is held by others, this waits for them, so that on return all are done.
    A file ``STOP`` in ``out_dir`` ends the loop before the next job (:class:`RunsStopped`): the
    runs in flight finish and are recorded, and the same command later goes on from there.

    Args:
        jobs (list of tuple): ``(name, job)``; the name is file-safe and names the claim.
        done_now (callable): the set of names finished so far (read again before every job).
        run (callable): ``run(job)`` runs one job to its end and records it where ``done_now`` reads.
        progress (Progress): told the rows of the jobs left and of ``later`` before every job.
        later (list): the rows of the runs the caller will start after these (one entry per run).
        row_of (callable): a job's row (its runs are timed together); the job itself when None.
        deadline (float): seconds since the epoch: start only runs expected to end by then (each at
            its row's mean time, see :meth:`Progress.expected_seconds`), and stop
            (:class:`RunsStopped`) when none is left that fits: no run is cut off by a machine
            that goes at a known time.
    """
    from recbole_micro.experiments import claims as claiming

    claims = claiming.Claims(out_dir)
    said = None
    while True:
        stop = Path(out_dir) / "STOP"
        if stop.exists():  # asked to stop between runs (e.g. before the machine goes): nothing is lost
            raise RunsStopped(f"stopped before the next run, as {stop} asks; remove it and run the same command "
                              "again to go on from here")
        done = done_now()
        left = [(name, job) for name, job in jobs if name not in done]
        if not left:
            return
        if progress is not None:
            progress.expect([row_of(job) if row_of else job for _, job in left] + list(later))
        too_long = 0
        for name, job in left:
            row = row_of(job) if row_of else job
            if deadline is not None and time.time() + (progress.expected_seconds(row) if progress else 0.0) > deadline:
                too_long += 1
                continue
            if not claims.take(name):
                continue
            try:
                if name not in done_now():  # another worker may have finished it since the look above
                    run(job)
            finally:
                claims.release(name)
            said = None
            break
        else:
            if too_long:
                raise RunsStopped(f"no run left that is expected to end before the deadline "
                                  f"({time.strftime('%H:%M', time.localtime(deadline))}): {too_long} of the "
                                  f"{len(left)} runs left wait for a later start of the same command")
            line = claims.waiting_line([name for name, _ in left])
            if line and line != said:
                log(line)
                said = line
            claiming.wait()


def write_outputs(rows, models, out_dir, proposed=None, notes=""):
    """runs.csv, table.md (with ``notes`` after the table) and chart.png from finished runs."""
    out_dir = Path(out_dir)
    proposed = list(proposed or DEFAULT_PROPOSED)
    reference = first_proposed(rows, models, proposed)
    with open(out_dir / ".outputs.lock", "w") as lock:  # workers that end together write one after the other
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_rows_csv(rows, out_dir / "runs.csv")
        table = comparison_table(rows, models, proposed) + "\n" + (f"\n{notes}\n" if notes else "")
        (out_dir / "table.md").write_text(table)
        (out_dir / "seeds.md").write_text(seed_table(rows, models, reference=reference) + "\n")
        plot_comparison(rows, models, out_dir / "chart.png", reference=reference)

"""Side-by-side comparison: several models on one dataset under one protocol and several seeds.

Every (model, seed) is one full run of :func:`~recbole_micro.quick_start.run_recbole_micro`
with the same dataset, split, metrics and seeds. The results go to ``out_dir``:

- ``runs.jsonl``: one line per finished run (what makes the comparison resumable: a re-run
  skips the (model, seed) pairs already there);
- ``running.json``: the checkpoint of each run in progress, so that a run interrupted mid-way
  continues from its last evaluated epoch on the re-run (see :mod:`recbole_micro.trainer`);
- ``claims/``: the runs other workers on the same folder are running now (see
  :mod:`recbole_micro.claims`): start the same command twice and the two share the runs;
- ``runs.csv``: the same rows, every valid and test metric at every cut-off, with the run's
  time, its saved model, its log and its full config (``configs/<model>-seed<seed>.json``);
- ``logs/<model>-seed<seed>.log``: RecBole's log of the run;
- ``table.md``: the papers' Table 4 form, mean ± sample std over the seeds (best in bold, second
  underlined), with the relative improvement of the best proposed model over the best baseline;
- ``seeds.md``: test Recall@20 seed by seed, and each row's paired difference from the first
  proposed row (runs with the same seed share the data split, so the paired difference is
  the fair test of a gap smaller than the spread over seeds);
- ``diagnostics/<model>-seed<seed>.json`` (with ``diagnose``): graph quality, modality weights
  and losses of each MICRO and LATTICE run (see :mod:`recbole_micro.diagnostics`);
- ``chart.png``: one panel per metric with every seed as a point beside its row's mean (the axis
  fitted to the data), and a panel of paired differences from the first proposed row.
"""
import fcntl
import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np

from recbole_micro.errors import ModelSpecError, RunsStopped
from recbole_micro.files import write_atomically
from recbole_micro.results import Progress, metric_columns, pyplot, write_rows_csv

TABLE_METRICS = ("recall@20", "precision@20", "ndcg@20")  # the papers' Table 4 columns
DEFAULT_BASELINES = ("ItemKNN", "BPR", "NGCF", "LightGCN", "SGL", "VBPR")
DEFAULT_PROPOSED = ("MICRO",)


def read_runs(out_dir):
    """The finished runs recorded in ``out_dir/runs.jsonl``, one per (model, seed): the first recorded.

    A (model, seed) pair is recorded twice only if a run ended between its two records (a tuning
    run's trial and its run); the same seed gives the same result, and no table counts it twice.
    """
    runs = {}
    for row in read_jsonl(Path(out_dir) / "runs.jsonl"):
        runs.setdefault((row["model"], row["seed"]), row)
    return list(runs.values())


def read_jsonl(path):
    """The rows of a JSON-lines file that other workers may be appending to (a last line still
    being written, with no newline yet, is left for the next read)."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except ValueError:
            lines.pop()
    return [json.loads(line) for line in lines if line.strip()]


def _log_file():
    """The file RecBole's logger is writing to, if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def _config_as_dict(config):
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
            for k, v in config.final_config_dict.items()}


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_model_spec(spec):
    """``"MICRO:use_specific=False,knn_k=20"`` -> ``("MICRO", {"use_specific": False, "knn_k": 20})``.

    A model name alone has no overrides. Values are read as YAML scalars. The whole spec is the
    row label, so ablations and variants sit in the same table as the models.
    """
    import yaml

    name, _, settings = spec.partition(":")
    overrides = {}
    for item in filter(None, settings.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ModelSpecError(f"model spec {spec!r}: write settings as key=value, e.g. MICRO:use_specific=False")
        value = yaml.safe_load(value)
        if isinstance(value, str) and _NUMBER.match(value):
            value = float(value)  # YAML 1.1 reads 1e-05 (no dot) as a string; Python writes floats that way
        overrides[key.strip()] = value
    return name.strip(), overrides


def run_comparison(models, dataset, seeds, out_dir, config_file_list=None, config_dict=None, proposed=DEFAULT_PROPOSED,
                   log=print, progress=None, notes="", diagnose=False, deadline=None):
    """Run every model with every seed (skipping finished pairs) and write the tables.

    Several workers may run the same comparison on one ``out_dir`` at once: each takes the next
    run no other worker holds (see :mod:`recbole_micro.claims`), and waits for the others' runs
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
    for r in recorded:  # how long each row's runs took, earlier sessions' included
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
    checkpoint and log (:func:`recbole_micro.diagnostics.diagnose_run`), into
    ``diagnostics/<model>-seed<seed>.json``: the checkpoint may be gone by the time the table is read.

    Returns:
        tuple: (its row in ``runs.jsonl``, the result of :func:`~recbole_micro.quick_start.run_recbole_micro`).
    """
    from recbole_micro.quick_start import run_recbole_micro

    start = time.time()
    model_name, overrides = parse_model_spec(model)
    resume = _interrupted_run(out_dir, model, seed)
    if resume:
        log(f"{model} seed {seed}: resuming {resume}")
    result = run_recbole_micro(model=model_name, dataset=dataset, config_file_list=config_file_list,
                               config_dict={**(config_dict or {}), **overrides, "seed": seed}, resume=resume,
                               started=lambda checkpoint: _mark_running(out_dir, model, seed, checkpoint))
    seconds = time.time() - start + result.get("seconds_before_resume", 0.0)  # a resumed run's earlier sessions too
    row = _record_run(out_dir, model, seed, dataset, result, seconds, _running_entry(out_dir, model, seed)["logs"])
    _mark_running(out_dir, model, seed, None)
    if diagnose:
        diagnose_recorded_run(out_dir, model, seed, row, log)
    return row, result


def diagnose_recorded_run(out_dir, model, seed, row, log):
    """The diagnosis of one recorded run of a model with item graphs; a failure is logged, and the run stays."""
    from recbole_micro.diagnostics import diagnose_run
    from recbole_micro.utils import get_model

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
    from recbole_micro import claims as claiming

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


def adopt_runs(src_dir, out_dir, models):
    """Copy the finished runs of ``models`` (rows, configs, logs, diagnostics) from another comparison's folder.

    For a row that two comparisons share (the full model in an ablation table, say): the same
    spec and seed on the same dataset is the same run, so it need not run again. Runs already
    in ``out_dir`` are kept as they are.

    Returns:
        int: the number of runs copied.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    for sub in ("logs", "configs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".adopt.lock", "w") as lock:  # two workers adopting at once copy each run once
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = {(r["model"], r["seed"]) for r in read_runs(out_dir)}
        copied = [r for r in read_runs(src_dir) if r["model"] in models and (r["model"], r["seed"]) not in have]
        for row in copied:
            files = [row.get("config"), row.get("log"), f"diagnostics/{run_name(row['model'], row['seed'])}.json"]
            for file in filter(None, files):
                if (src_dir / file).is_file():
                    (out_dir / file).parent.mkdir(exist_ok=True)
                    shutil.copyfile(src_dir / file, out_dir / file)
        with open(out_dir / "runs.jsonl", "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in copied)
    return len(copied)


def _mark_running(out_dir, model, seed, checkpoint):
    """Note (or, with None, forget) the run of ``model`` with ``seed`` in ``running.json``: its checkpoint,
    and the log file of each process that has worked on it (a resumed run has one per start)."""
    path = Path(out_dir) / "running.json"
    with open(Path(out_dir) / ".running.lock", "w") as lock:  # other workers on this folder write it too
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = json.loads(path.read_text()) if path.is_file() else {}
        key = f"{model} seed {seed}"
        if checkpoint is None:
            running.pop(key, None)
        else:
            entry = _entry(running.get(key))
            log = _log_file()
            logs = entry["logs"] + ([str(log)] if log is not None and str(log) not in entry["logs"] else [])
            running[key] = {"checkpoint": str(Path(checkpoint).resolve()), "logs": logs}
        write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(running, indent=1, sort_keys=True)))


def _entry(value):
    """A ``running.json`` entry as a dict (an older version wrote the checkpoint path alone)."""
    if isinstance(value, str):
        return {"checkpoint": value, "logs": []}
    return value or {"checkpoint": None, "logs": []}


def _running_entry(out_dir, model, seed):
    path = Path(out_dir) / "running.json"
    return _entry(json.loads(path.read_text()).get(f"{model} seed {seed}") if path.is_file() else None)


def _interrupted_run(out_dir, model, seed):
    """The checkpoint of an interrupted run of ``model`` with ``seed`` that left a resume state, or None."""
    from recbole_micro.trainer import resume_file_of  # torch and RecBole: only once runs start

    checkpoint = _running_entry(out_dir, model, seed)["checkpoint"]
    return checkpoint if checkpoint and resume_file_of(checkpoint).is_file() else None


def machine():
    """What a run's numbers depend on beyond its settings and seed: CPU (or GPU), its kernels, threads, torch.

    The same seed gives the same result on one machine; another CPU's kernels round differently
    (GRCN on Scientific: epoch-0 loss 8.3345 on one session's machine, 8.3348 on another's), so
    each run row says where it ran.
    """
    import torch

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    gpu = f"{torch.cuda.get_device_name()}, " if torch.cuda.is_available() else ""
    threads = torch.get_num_threads()
    return (f"{gpu}{cpu or 'CPU'} ({torch.backends.cpu.get_cpu_capability()}), {threads} thread{'s' * (threads > 1)}, "
            f"torch {torch.__version__}")


def run_name(model, seed):
    """File-name stem of one run: the model spec with unsafe characters replaced, and the seed."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in model) + f"-seed{seed}"


def _record_run(out_dir, model, seed, dataset, result, seconds, logs=()):
    """Keep one finished run: its config and log under ``out_dir``, its row appended to ``runs.jsonl``.

    Args:
        logs (list of str): the log files of the processes that worked on the run, in order (a
            resumed run's earlier starts); the kept log is them and this process's, one after the other.

    Returns:
        dict: the row (model, seed, time, saved model, config and log paths, every metric).
    """
    name = run_name(model, seed)
    config_path = out_dir / "configs" / f"{name}.json"
    config_path.write_text(json.dumps(_config_as_dict(result["config"]), indent=1, sort_keys=True))
    log_path = _log_file()
    if log_path is not None and log_path.is_file():
        parts = list(dict.fromkeys([*logs, str(log_path)]))
        with open(out_dir / "logs" / f"{name}.log", "wb") as kept:
            for part in parts:
                if Path(part).is_file():
                    kept.write(Path(part).read_bytes())
    row = {
        "model": model, "seed": seed, "dataset": dataset, "seconds": round(seconds, 1),
        "best_valid_score": result["best_valid_score"],
        "saved_model_file": result["saved_model_file"],
        "config": str(config_path.relative_to(out_dir)),
        "log": f"logs/{name}.log" if log_path is not None else "",
        "machine": machine(),
        **metric_columns(result),
    }
    with open(out_dir / "runs.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def write_outputs(rows, models, out_dir, proposed=None, notes=""):
    """runs.csv, table.md (with ``notes`` after the table) and chart.png from finished runs."""
    out_dir = Path(out_dir)
    proposed = list(proposed or DEFAULT_PROPOSED)
    reference = _first_proposed(rows, models, proposed)
    with open(out_dir / ".outputs.lock", "w") as lock:  # workers that end together write one after the other
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_rows_csv(rows, out_dir / "runs.csv")
        table = comparison_table(rows, models, proposed) + "\n" + (f"\n{notes}\n" if notes else "")
        (out_dir / "table.md").write_text(table)
        (out_dir / "seeds.md").write_text(seed_table(rows, models, reference=reference) + "\n")
        plot_comparison(rows, models, out_dir / "chart.png", reference=reference)


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
    ours = [m for m in stats if _is_proposed(m, proposed)]
    baselines = [m for m in stats if m not in ours]
    if ours and baselines:
        cells = []
        for m in metrics:
            best_ours = max(stats[o][m][0] for o in ours)
            best_base = max(stats[b][m][0] for b in baselines)
            cells.append(f"{100 * (best_ours - best_base) / best_base:+.2f}%" if best_base > 0 else "n/a")
        lines.append("| Improv. | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _is_proposed(model, proposed):
    """Whether a row is a proposed model or a variant of one (``MICRO:use_specific=False``)."""
    return model in proposed or parse_model_spec(model)[0] in proposed


def _first_proposed(rows, models, proposed):
    """The first row in ``models`` that has runs and is proposed (see :func:`_is_proposed`)."""
    present = {r["model"] for r in rows}
    return next((m for m in models if m in present and _is_proposed(m, proposed)), None)


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


def metric_title(metric):
    """'recall@20' -> 'Recall@20': the name in the table's header and the chart's panels."""
    return metric.replace("recall", "Recall").replace("ndcg", "NDCG").replace("precision", "Precision")


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

"""A comparison's records on disk: ``runs.jsonl`` (one row per finished run), ``running.json``
(the runs in progress, to resume), the kept configs and logs, and runs adopted from another folder.
"""
import fcntl
import json
import logging
import re
import shutil
from pathlib import Path

from recbole_micro.errors import ModelSpecError
from recbole_micro.files import write_atomically
from recbole_micro.quick_start import metric_columns


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


def log_file():
    """The file RecBole's logger is writing to, if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def config_as_dict(config):
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
            for k, v in config.final_config_dict.items()}


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


def mark_running(out_dir, model, seed, checkpoint):
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
            log = log_file()
            logs = entry["logs"] + ([str(log)] if log is not None and str(log) not in entry["logs"] else [])
            running[key] = {"checkpoint": str(Path(checkpoint).resolve()), "logs": logs}
        write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(running, indent=1, sort_keys=True)))


def _entry(value):
    """A ``running.json`` entry as a dict (an older version wrote the checkpoint path alone)."""
    if isinstance(value, str):
        return {"checkpoint": value, "logs": []}
    return value or {"checkpoint": None, "logs": []}


def running_entry(out_dir, model, seed):
    path = Path(out_dir) / "running.json"
    return _entry(json.loads(path.read_text()).get(f"{model} seed {seed}") if path.is_file() else None)


def interrupted_run(out_dir, model, seed):
    """The checkpoint of an interrupted run of ``model`` with ``seed`` that left a resume state, or None."""
    from recbole_micro.trainer.trainer import resume_file_of

    checkpoint = running_entry(out_dir, model, seed)["checkpoint"]
    return checkpoint if checkpoint and resume_file_of(checkpoint).is_file() else None


def machine():
    """What a run's numbers depend on beyond its settings and seed: CPU (or GPU), its kernels, threads, torch.

    The same seed gives the same result on one machine; another CPU's kernels round differently
    (GRCN on Scientific: epoch-0 loss 8.3345 on one machine, 8.3348 on another), so
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


def record_run(out_dir, model, seed, dataset, result, seconds, logs=()):
    """Keep one finished run: its config and log under ``out_dir``, its row appended to ``runs.jsonl``.

    Args:
        logs (list of str): the log files of the processes that worked on the run, in order (a
            resumed run's earlier starts); the kept log is them and this process's, one after the other.

    Returns:
        dict: the row (model, seed, time, saved model, config and log paths, every metric).
    """
    name = run_name(model, seed)
    config_path = out_dir / "configs" / f"{name}.json"
    config_path.write_text(json.dumps(config_as_dict(result["config"]), indent=1, sort_keys=True))
    log_path = log_file()
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

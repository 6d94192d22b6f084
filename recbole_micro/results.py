"""What the compare and tune modes share: a run's metric columns, rows as CSV, fixed.yaml, headless charts,
progress lines."""
import csv
import time
from pathlib import Path


def metric_columns(result):
    """A finished run's metrics as flat columns: ``valid_<metric>`` and ``test_<metric>``.

    Args:
        result (dict): what :func:`~recbole_micro.quick_start.run_recbole_micro` or
            ``objective_function`` returns (``best_valid_result``, ``test_result``; either may be None).
    """
    return {
        **{f"valid_{k}": v for k, v in (result["best_valid_result"] or {}).items()},
        **{f"test_{k}": v for k, v in (result["test_result"] or {}).items()},
    }


def write_rows_csv(rows, path):
    """Rows of dicts as CSV; the columns are every key, in first-seen order."""
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_fixed_yaml(out_dir, model, dataset):
    """``out_dir/fixed.yaml`` naming the model and dataset: the fixed config file of every tuning point."""
    path = Path(out_dir) / "fixed.yaml"
    path.write_text(f"model: {model}\ndataset: {dataset}\n")
    return path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Progress:
    """One line per finished run: run i of n, its valid and test Recall@20, elapsed, time left."""

    def __init__(self, total, log=print):
        self.total, self.done, self.start, self.log = total, 0, time.time(), log

    def finished(self, label, result):
        self.done += 1
        elapsed = time.time() - self.start
        left = elapsed / self.done * (self.total - self.done)
        valid = (result.get("best_valid_result") or {}).get("recall@20", float("nan"))
        test = (result.get("test_result") or {}).get("recall@20", float("nan"))
        self.log(f"[{self.done}/{self.total}] {label}: valid Recall@20 {valid:.4f}, test {test:.4f}; "
                 f"{_duration(elapsed)} elapsed, about {_duration(left)} left")


def _duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"

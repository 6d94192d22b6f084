"""What the compare and tune modes share: rows as CSV, fixed.yaml, progress lines."""
import csv
import time
from pathlib import Path


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


class Progress:
    """One line per finished run: run i of n, its valid and test Recall@20, elapsed, and the time left.

    Rows differ in cost by orders of magnitude (ItemKNN seconds, MICRO hours), so once the rows of
    the runs left are known (:meth:`expect`), each run left is timed at the mean time of its row's
    finished runs, those of earlier starts included (``timings``); a row with none yet is timed
    at the mean of all, and the line says how many runs that is. Before that, the mean of this
    process's runs times the runs left.
    """

    def __init__(self, total, log=print, timings=None):
        self.total, self.done, self.start, self.log = total, 0, time.time(), log
        self.timings = {}
        self.left = None  # the row of each run left, once known
        for row, seconds in (timings or {}).items():
            self.add_timings(row, seconds)

    def add_timings(self, row, seconds):
        """Past runs of ``row`` took these seconds."""
        self.timings.setdefault(row, []).extend(float(s) for s in seconds)

    def expect(self, rows_left):
        """The runs left, by row (one entry per run)."""
        self.left = list(rows_left)
        self.total = self.done + len(self.left)

    def finished(self, label, result, row=None, seconds=None):
        self.done += 1
        if row is not None and seconds is not None:
            self.add_timings(row, [seconds])
        if self.left is not None and row in self.left:
            self.left.remove(row)
        elapsed = time.time() - self.start
        valid = (result.get("best_valid_result") or {}).get("recall@20", float("nan"))
        test = (result.get("test_result") or {}).get("recall@20", float("nan"))
        self.log(f"[{self.done}/{self.total}] {label}: valid Recall@20 {valid:.4f}, test {test:.4f}; "
                 f"{_duration(elapsed)} elapsed, {self.time_left(elapsed)}")

    def _means(self):
        return {row: sum(s) / len(s) for row, s in self.timings.items() if s}

    def expected_seconds(self, row):
        """How long a run of ``row`` is expected to take: its row's mean; for a row not timed yet, the
        slowest row's mean (0 when nothing is timed)."""
        means = self._means()
        return means.get(row, max(means.values(), default=0.0))

    def time_left(self, elapsed):
        """``about 1h05m left``, from the rows' timings where they are known."""
        if self.left is None or not self.timings:
            return f"about {_duration(elapsed / self.done * (self.total - self.done))} left"
        means = self._means()
        overall = sum(sum(s) for s in self.timings.values()) / sum(len(s) for s in self.timings.values())
        untimed = sum(row not in means for row in self.left)
        left = sum(means.get(row, overall) for row in self.left)
        note = f" ({untimed} of them in rows not timed yet, counted at the mean run)" if untimed else ""
        return f"about {_duration(left)} left{note}"


def _duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"

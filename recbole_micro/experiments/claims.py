"""Claims on runs, so that several workers can share one comparison's output folder.

A worker about to start a run writes ``<out_dir>/claims/<run>.json`` (under a lock on the
folder, so that two workers never take the same run), holding its host, boot id, process id
and the process's start time; it removes the file when the run ends, finished or failed.
Another worker finds the file and moves on to the next run. A claim whose process is gone (same
host, and a dead process, another process under the same id, or another boot) is stale: the
next worker to find it takes the run over, and resumes it from its last epoch where the run
left a resume state. A claim from another host cannot be checked and counts as live; the
waiting message names its folder, to remove it by hand if that worker is gone.
"""
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from recbole_micro.files import write_atomically

# Seconds between looks at the other workers' runs while this worker has nothing left to start.
WAIT_SECONDS = 30


def _boot_id():
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _started(pid):
    """When process ``pid`` started (clock ticks after boot, /proc/<pid>/stat field 22), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, started=None):
    """Whether ``pid`` runs and, when its start time is known, is the process that started then (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    now = _started(pid)
    return started is None or now is None or now == started


class Claims:
    """The claims under ``<out_dir>/claims``: take one, release it, and list the live ones of others."""

    def __init__(self, out_dir):
        self.folder = Path(out_dir) / "claims"
        self.mine = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
                     "pid_started": _started(os.getpid())}

    def _path(self, name):
        return self.folder / f"{name}.json"

    def holder(self, name):
        """The live claim on ``name`` held by another worker (its record), or None (no claim, mine, or stale)."""
        try:
            record = json.loads(self._path(name).read_text())
        except (OSError, ValueError):  # absent, or half-written by a worker that died mid-write
            return None
        if record.get("pid") == self.mine["pid"] and record.get("host") == self.mine["host"]:
            return None
        if record.get("host") != self.mine["host"]:
            return record
        alive = _alive(int(record.get("pid", 0)), record.get("pid_started"))
        if record.get("boot_id") != self.mine["boot_id"] or not alive:
            return None
        return record

    def take(self, name):
        """Claim ``name``; False if another live worker holds it. A stale claim is taken over."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:  # one taker at a time, so a stale claim goes to one worker
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self._path(name)
            if path.exists() and self.holder(name) is not None:
                return False
            record = {**self.mine, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(record)))
            return True

    def release(self, name):
        """Drop this worker's claim on ``name`` (nothing if it holds none)."""
        path = self._path(name)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if record.get("pid") == self.mine["pid"] and record.get("host") == self.mine["host"]:
            path.unlink(missing_ok=True)

    def waiting_line(self, names):
        """One line naming the other workers' live claims among ``names``."""
        held = [(name, self.holder(name)) for name in names]
        held = [(name, record) for name, record in held if record is not None]
        if not held:
            return ""
        shown = "; ".join(f"{name} (pid {r.get('pid')} on {r.get('host')}, since {r.get('started', '?')})"
                          for name, r in held[:3])
        more = f" and {len(held) - 3} more" if len(held) > 3 else ""
        return (f"waiting for {len(held)} run(s) held by other workers: {shown}{more}; a claim whose worker is "
                f"gone on another host must be removed by hand from {self.folder}")


def wait():
    """Sleep between looks at the other workers (tests replace this)."""
    time.sleep(WAIT_SECONDS)

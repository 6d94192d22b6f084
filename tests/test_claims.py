"""Several workers on one comparison folder: claims share the runs, and nobody runs one twice."""
import json
import os
import subprocess

import pytest

from recbole_micro.experiments import claims as claiming
from recbole_micro.experiments.claims import Claims
from recbole_micro.experiments.compare import run_shared


def claim_of(out_dir, name, **record):
    """Write the claim another worker would hold on ``name``."""
    mine = Claims(out_dir).mine
    folder = out_dir / "claims"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({**mine, "started": "then", **record}))


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_run_held_by_a_live_worker_is_left_to_it_and_waited_for(tmp_path, monkeypatch):
    from recbole_micro.experiments.claims import _started

    claim_of(tmp_path, "b", pid=os.getppid(), pid_started=_started(os.getppid()))  # a live process, not this one
    done, ran, lines = set(), [], []

    def other_worker_finishes():
        done.add("b")

    monkeypatch.setattr(claiming, "wait", other_worker_finishes)

    def run(job):
        ran.append(job)
        done.add(job)

    run_shared(tmp_path, [(n, n) for n in "abc"], lambda: set(done), run, log=lines.append)
    assert ran == ["a", "c"] and done == {"a", "b", "c"}
    assert len(lines) == 1 and lines[0].startswith(f"waiting for 1 run(s) held by other workers: b (pid {os.getppid()}")
    assert sorted(p.name for p in (tmp_path / "claims").glob("*.json")) == ["b.json"]  # ours released, b's untouched


@pytest.mark.parametrize("stale", ["dead process", "another boot"])
def test_a_stale_claim_is_taken_over(tmp_path, stale):
    record = {"pid": dead_pid()} if stale == "dead process" else {"pid": os.getppid(), "boot_id": "another boot"}
    record["pid_started"] = None
    claim_of(tmp_path, "a", **record)
    ran = []
    run_shared(tmp_path, [("a", "a")], lambda: set(ran), ran.append)
    assert ran == ["a"] and not (tmp_path / "claims" / "a.json").exists()


def test_a_claim_from_another_host_counts_as_live_and_the_message_says_where_to_remove_it(tmp_path):
    claim_of(tmp_path, "a", host="elsewhere", pid=1)
    claims = Claims(tmp_path)
    assert not claims.take("a")
    line = claims.waiting_line(["a", "b"])
    assert "a (pid 1 on elsewhere" in line and str(tmp_path / "claims") in line


def test_a_run_finished_by_another_worker_after_the_look_is_not_run_again(tmp_path):
    looks = iter([set(), {"a"}, {"a"}])  # the first look sees nothing; by the claim, another worker finished 'a'
    ran = []
    run_shared(tmp_path, [("a", "a")], lambda: next(looks), ran.append)
    assert ran == []


def test_a_failed_run_releases_its_claim(tmp_path):
    def fail(job):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_shared(tmp_path, [("a", "a")], set, fail)
    assert not (tmp_path / "claims" / "a.json").exists()
    assert Claims(tmp_path).take("a")


def test_a_stop_file_ends_the_runs_before_the_next_one_and_the_same_command_goes_on(tmp_path):
    from recbole_micro.errors import RunsStopped

    ran = []

    def run(job):
        ran.append(job)
        if job == "a":
            (tmp_path / "STOP").write_text("")  # asked to stop while 'a' runs: 'a' still finishes

    with pytest.raises(RunsStopped, match=f"as {tmp_path / 'STOP'} asks; remove it"):
        run_shared(tmp_path, [(n, n) for n in "abc"], lambda: set(ran), run)
    assert ran == ["a"]
    (tmp_path / "STOP").unlink()
    run_shared(tmp_path, [(n, n) for n in "abc"], lambda: set(ran), run)
    assert ran == ["a", "b", "c"]


def test_the_command_line_stops_with_its_own_exit_code_and_one_line(tiny):
    from helpers import run_script

    out = tiny.root / "cmp"
    out.mkdir()
    (out / "STOP").write_text("")
    result = run_script("-d", "tiny", "--compare", "BPR", "--seeds", "1", "--out", str(out), cwd=tiny.root)
    assert result.returncode == 3 and result.stderr.strip().splitlines()[-1].startswith("stopped before the next run")
    assert "Traceback" not in result.stderr and not (out / "runs.jsonl").exists()


def test_a_claim_whose_process_id_now_belongs_to_another_process_is_stale(tmp_path):
    from recbole_micro.experiments.claims import _started

    parent = os.getppid()
    assert _started(parent) is not None
    claim_of(tmp_path, "a", pid=parent, pid_started=_started(parent) + 1)  # same id, another start: pid reused
    assert Claims(tmp_path).holder("a") is None and Claims(tmp_path).take("a")
    claim_of(tmp_path, "b", pid=parent, pid_started=_started(parent))
    assert Claims(tmp_path).holder("b")["pid"] == parent and not Claims(tmp_path).take("b")


def test_a_deadline_starts_only_runs_expected_to_end_by_then_and_then_stops(tmp_path):
    import time

    from recbole_micro.errors import RunsStopped
    from recbole_micro.experiments.reports import Progress

    progress = Progress(0, lambda *_: None, timings={"fast": [10.0], "slow": [3600.0]})
    assert progress.expected_seconds("new") == 3600.0  # not timed yet: as long as the slowest row
    ran = []
    jobs = [("s1", "slow"), ("f1", "fast"), ("n1", "new"), ("f2", "fast")]
    with pytest.raises(RunsStopped, match=r"2 of the 2 runs left wait for a later start"):
        run_shared(tmp_path, [(name, name) for name, _ in jobs], lambda: set(ran), ran.append, progress=progress,
                   row_of=dict(jobs).get, deadline=time.time() + 600)
    assert ran == ["f1", "f2"]
    run_shared(tmp_path, [(name, name) for name, _ in jobs], lambda: set(ran), ran.append, progress=progress,
               row_of=dict(jobs).get, deadline=time.time() + 7200)  # a later start has the time
    assert ran == ["f1", "f2", "s1", "n1"]


def test_deadlines_are_read_as_a_clock_time_today_or_a_time_from_now():
    import datetime

    from recbole_micro.errors import ModelSpecError
    from recbole_micro.experiments.compare import parse_deadline

    now = datetime.datetime(2026, 12, 2, 7, 30).timestamp()
    assert parse_deadline("+2h30m", now) == now + 9000 and parse_deadline("+90m", now) == now + 5400
    assert parse_deadline("9:05", now) == datetime.datetime(2026, 12, 2, 9, 5).timestamp()
    with pytest.raises(ModelSpecError, match="has passed today"):
        parse_deadline("07:00", now)
    for bad in ("tomorrow", "+", "25:00", "9h"):
        with pytest.raises(ModelSpecError, match="write HH:MM"):
            parse_deadline(bad, now)

"""A tuned comparison: each row tuned on validation with the same budget, then compared over seeds."""
import json

import pytest
from helpers import REPO, run_script

from recbole_micro.errors import ModelSpecError
from recbole_micro.experiments.records import read_runs
from recbole_micro.experiments.reports import Progress
from recbole_micro.experiments.tuned_compare import (
    choose,
    grid_points,
    grid_trials,
    parse_grid,
    read_hyper_grid,
    run_tuned_comparison,
)


def test_the_choice_follows_validation_even_when_another_point_is_best_on_test():
    trials = [
        {"point": {"lr": 1}, "best_valid_score": 0.30, "test_recall@20": 0.50},  # best on test
        {"point": {"lr": 2}, "best_valid_score": 0.40, "test_recall@20": 0.20},  # best on validation
        {"point": {"lr": 3}, "best_valid_score": 0.40, "test_recall@20": 0.45},  # tie: the first tried wins
    ]
    assert choose(trials)["point"] == {"lr": 2}
    assert choose(trials, bigger=False)["point"] == {"lr": 1}  # a loss-like valid metric: smaller is better


def test_a_tie_goes_to_the_first_grid_point_whichever_worker_finished_first():
    grid = {"learning_rate": [5e-4, 1e-3], "reg_weight": [1e-5, 1e-4, 1e-3]}
    finished = [{"point": {"learning_rate": 5e-4, "reg_weight": 1e-3}, "best_valid_score": 0.1113},  # first, tied
                {"point": {"learning_rate": 1e-3, "reg_weight": 1e-5}, "best_valid_score": 0.1097},
                {"point": {"learning_rate": 5e-4, "reg_weight": 1e-4}, "best_valid_score": 0.1113},  # earlier in grid
                {"point": {"learning_rate": 5e-4, "reg_weight": 1e-4}, "best_valid_score": 0.2},  # tried again: ignored
                {"point": {"learning_rate": 5e-3, "reg_weight": 1e-4}, "best_valid_score": 0.3}]  # not in the grid
    ordered = grid_trials(finished, grid)
    assert [t["point"]["reg_weight"] for t in ordered] == [1e-4, 1e-3, 1e-5]
    assert [t["best_valid_score"] for t in ordered] == [0.1113, 0.1113, 0.1097]
    assert choose(ordered)["point"] == {"learning_rate": 5e-4, "reg_weight": 1e-4}
    assert choose(grid_trials(finished[2::-1], grid))["point"]["reg_weight"] == 1e-4


def test_grids_from_the_command_line_and_from_hyper_files():
    assert parse_grid("learning_rate=5e-4,1e-3 reg_weight=0,1e-4") == {"learning_rate": [5e-4, 1e-3],
                                                                       "reg_weight": [0, 1e-4]}
    assert len(grid_points(parse_grid("a=1,2,3 b=True,False"))) == 6
    with pytest.raises(ModelSpecError, match="write name=v1,v2"):
        parse_grid("learning_rate")
    assert read_hyper_grid(REPO / "hyper" / "LightGCN.hyper") == {"learning_rate": [1e-4, 5e-4, 1e-3, 5e-3],
                                                                  "reg_weight": [0, 1e-5, 1e-4, 1e-3]}


def test_progress_lines_count_runs_and_estimate_the_time_left():
    lines = []
    progress = Progress(4, lines.append)
    progress.finished("BPR seed 1", {"best_valid_result": {"recall@20": 0.25}, "test_result": {"recall@20": 0.3}})
    assert lines[0].startswith("[1/4] BPR seed 1: valid Recall@20 0.2500, test 0.3000; ")
    assert "elapsed, about" in lines[0] and lines[0].endswith("left")


def test_each_row_is_tuned_on_validation_then_compared_and_a_rerun_runs_nothing(tiny, monkeypatch):
    out = tiny.root / "fair"
    lines = []
    settings = tiny.config_dict(epochs=1)
    rows, chosen = run_tuned_comparison(["BPR", "VBPR"], "tiny", [1, 2], out, grid=parse_grid("learning_rate=1e-3,5e-2"),
                                        config_dict=settings, proposed=["VBPR"], log=lines.append)
    trials = [json.loads(line) for line in (out / "tuning.jsonl").read_text().splitlines()]
    assert sorted((t["model"], t["point"]["learning_rate"]) for t in trials) == [
        ("BPR", 1e-3), ("BPR", 5e-2), ("VBPR", 1e-3), ("VBPR", 5e-2)]
    for model in ("BPR", "VBPR"):
        mine = [t for t in trials if t["model"] == model]
        assert chosen[model]["point"] == max(mine, key=lambda t: t["best_valid_score"])["point"]
        assert chosen[model]["budget"] == 2 and all(t["seed"] == 1 for t in mine)
    assert sorted(r["seed"] for r in rows) == [1, 1, 2, 2]
    for run in rows:  # each row ran at its chosen point
        config = json.loads((out / run["config"]).read_text())
        model = run["model"].split(":")[0]
        assert config["learning_rate"] == chosen[model]["point"]["learning_rate"] and config["seed"] == run["seed"]
    # every tuning run is kept as a run (config and log), and the chosen one is the row's seed-1 run: 4 + 2 runs in all
    runs = read_runs(out)
    assert sorted((r["model"], r["seed"]) for r in runs) == sorted(
        [(f"{m}:learning_rate={lr}", 1) for m in ("BPR", "VBPR") for lr in (0.001, 0.05)]
        + [(f"{m}:learning_rate={chosen[m]['point']['learning_rate']}", 2) for m in ("BPR", "VBPR")])
    assert all(r["machine"].endswith(f"torch {__import__('torch').__version__}") for r in runs)  # where each ran
    for trial in trials:
        run = next(r for r in runs if r["model"] == f"{trial['model']}:learning_rate={trial['point']['learning_rate']}")
        assert run["best_valid_score"] == trial["best_valid_score"] and run["test_recall@20"] == trial["test_recall@20"]
        assert json.loads((out / run["config"]).read_text())["learning_rate"] == trial["point"]["learning_rate"]
    table = (out / "table.md").read_text()
    assert "Chosen on validation (seed 1)" in table and "- BPR: 2 points; learning_rate=" in table
    assert "| BPR | 2 | learning_rate ∈ {0.001, 0.05} |" in (out / "tuning.md").read_text()
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == [f"[{i}/6" for i in range(1, 7)]
    assert not list((out / "claims").glob("*.json"))  # every claim released

    import recbole_micro.quick_start as quick_start

    monkeypatch.setattr(quick_start, "run_recbole_micro", lambda *a, **k: pytest.fail("a finished run ran again"))
    again, chosen_again = run_tuned_comparison(["BPR", "VBPR"], "tiny", [1, 2], out,
                                               grid=parse_grid("learning_rate=1e-3,5e-2"), config_dict=settings,
                                               proposed=["VBPR"], log=lambda *a: None)
    assert chosen_again == chosen and len(again) == 4
    # a command comparing fewer rows in the same folder keeps the other rows' choices in chosen.json
    run_tuned_comparison(["BPR"], "tiny", [1, 2], out, grid=parse_grid("learning_rate=1e-3,5e-2"),
                         config_dict=settings, proposed=["BPR"], log=lambda *a: None)
    assert json.loads((out / "chosen.json").read_text()) == chosen
    assert "VBPR" not in (out / "table.md").read_text()  # the table is the command's rows


def test_the_command_line_refuses_a_row_without_a_grid_before_any_run(tiny):
    result = run_script("-d", "tiny", "--compare", "BPR", "Pop", "--tune-each", "--out", str(tiny.root / "f"),
                        cwd=tiny.root)
    assert result.returncode == 2 and "Pop.hyper" in result.stderr and "--tune-grid" in result.stderr
    assert not (tiny.root / "f" / "tuning.jsonl").exists()
    result = run_script("-d", "tiny", "--compare", "BPR", "--tune-grid", "learning_rate=1e-3", cwd=tiny.root)
    assert result.returncode == 2 and "add --tune-each" in result.stderr


def test_a_chosen_point_round_trips_through_the_row_label_as_numbers():
    """Python writes 1e-05 without a dot, which YAML 1.1 would read as a string."""
    from recbole_micro.experiments.compare import parse_model_spec
    from recbole_micro.experiments.tuned_compare import _with_point

    point = {"learning_rate": 0.0005, "reg_weight": 1e-05, "knn_k": 10, "cl_reduce": "sum", "use_specific": False}
    row = _with_point("MICRO:cl_anchors=batch", point)
    name, settings = parse_model_spec(row)
    assert name == "MICRO" and settings == {"cl_anchors": "batch", **point}
    assert type(settings["reg_weight"]) is float and type(settings["knn_k"]) is int


def test_a_grid_setting_the_model_does_not_use_is_not_tuned_and_the_table_says_so(tiny, monkeypatch):
    """RecBole's BPR has no L2 term: its reg_weight points would repeat one run each."""
    import recbole_micro.quick_start as quick_start

    out = tiny.root / "fair"
    out.mkdir()
    old = {"model": "BPR", "point": {"learning_rate": 0.001, "reg_weight": 0.0001}, "seed": 1, "seconds": 1.0,
           "best_valid_score": 0.99, "valid_score_bigger": True, "test_recall@20": 0.0}  # tried before the check
    (out / "tuning.jsonl").write_text(json.dumps(old) + "\n")
    ran, run = [], quick_start.run_recbole_micro
    monkeypatch.setattr(quick_start, "run_recbole_micro",
                        lambda **kw: ran.append({k: kw["config_dict"].get(k) for k in ("learning_rate", "reg_weight")})
                        or run(**kw))
    lines = []
    rows, chosen = run_tuned_comparison(["BPR"], "tiny", [1], out, config_dict=tiny.config_dict(epochs=1),
                                        grid=parse_grid("learning_rate=1e-3,5e-2 reg_weight=1e-4,1e-3"), log=lines.append)
    assert "BPR does not use reg_weight: tuned over the rest of the grid only" in lines
    # the old trial counts for learning_rate 1e-3; one new tuning run, then the chosen point's comparison run
    assert ran == [{"learning_rate": 0.05, "reg_weight": None}, {"learning_rate": 0.001, "reg_weight": None}]
    assert chosen["BPR"]["point"] == {"learning_rate": 0.001} and chosen["BPR"]["budget"] == 2
    assert [r["model"] for r in rows] == ["BPR:learning_rate=0.001"]
    assert "| BPR | 2 | learning_rate ∈ {0.001, 0.05} (reg_weight: not used by BPR) |" in (out / "tuning.md").read_text()


def test_settings_a_model_cannot_use_are_found_and_a_run_says_so(tiny, capsys, monkeypatch):
    import recbole_micro.config as config
    from recbole_micro.config import Config, settings_not_used_by

    monkeypatch.setattr(config, "_WARNED", set())  # said once per process: as if this were the first run
    from recbole_micro.registry import get_model

    keys = ["learning_rate", "reg_weight", "embedding_size", "knn_k"]
    assert settings_not_used_by(get_model("BPR"), keys) == ["knn_k", "reg_weight"]
    assert settings_not_used_by(get_model("ItemKNN"), keys) == ["embedding_size", "knn_k", "learning_rate", "reg_weight"]
    for model in ("LightGCN", "NGCF", "SGL", "VBPR", "MMGCN", "GRCN", "LATTICE", "MICRO",
                  "FREEDOM", "BM3", "LGMRec", "MGCN"):
        assert "reg_weight" not in settings_not_used_by(get_model(model), keys) and "learning_rate" not in \
            settings_not_used_by(get_model(model), keys)
    assert settings_not_used_by(get_model("MICRO"), ["knn_k", "cl_anchors", "tau", "n_item_layers"]) == []
    Config(model="BPR", dataset="tiny", config_dict=tiny.config_dict(reg_weight=1e-3))
    assert "warning: 'reg_weight' is set, but BPR does not use it" in capsys.readouterr().err


def test_the_time_left_counts_each_run_at_its_rows_mean_time():
    lines = []
    progress = Progress(0, lines.append, timings={"ItemKNN": [10.0], "MICRO": [3000.0, 4200.0]})
    progress.expect(["ItemKNN", "MICRO", "MICRO", "GRCN"])
    result = {"best_valid_result": {"recall@20": 0.1}, "test_result": {"recall@20": 0.1}}
    progress.finished("tuning ItemKNN", result, row="ItemKNN", seconds=20.0)
    # left: 2 MICRO runs at 3600 s, and GRCN (not timed yet) at the mean of all 4 runs, 1807.5 s: 9007.5 s
    assert lines[0].startswith("[1/4] tuning ItemKNN: ")
    assert lines[0].endswith("about 2h30m left (1 of them in rows not timed yet, counted at the mean run)")


def test_a_grid_value_that_a_row_label_cannot_carry_is_refused_before_any_run(tmp_path):
    from recbole_micro.experiments.tuned_compare import grids_for

    for bad in ({"latent_dim": [None, 64]}, {"hidden_size_list": [[64, 64]]}, {"cl_reduce": ["a,b"]}):
        with pytest.raises(ModelSpecError, match="cannot be written in a row label"):
            grids_for(["MMGCN"], tmp_path, bad)
    assert grids_for(["MICRO"], tmp_path, parse_grid("learning_rate=1e-3 use_specific=True,False cl_anchors='batch'"))


def test_trials_of_a_row_no_longer_compared_are_kept_and_ignored(tiny):
    out = tiny.root / "fair"
    out.mkdir()
    other = {"model": "Pop", "point": {"learning_rate": 0.001}, "seed": 1, "seconds": 1.0, "best_valid_score": 0.5,
             "valid_score_bigger": True}
    (out / "tuning.jsonl").write_text(json.dumps(other) + "\n")
    rows, chosen = run_tuned_comparison(["BPR"], "tiny", [1], out, grid=parse_grid("learning_rate=1e-3"),
                                        config_dict=tiny.config_dict(epochs=1), log=lambda *_: None)
    assert list(chosen) == ["BPR"] and json.loads((out / "tuning.jsonl").read_text().splitlines()[0]) == other


def test_a_row_already_tuned_runs_its_other_seeds_while_a_long_row_is_still_tuning(tiny, monkeypatch):
    """With a deadline no tuning run of the long row fits: the tuned row's seed-2 run fills the time."""
    import time

    import recbole_micro.quick_start as quick_start
    from recbole_micro.errors import RunsStopped

    out, grid, settings = tiny.root / "fair", parse_grid("learning_rate=1e-3,5e-2"), tiny.config_dict(epochs=1)
    _, chosen = run_tuned_comparison(["BPR"], "tiny", [1], out, grid=grid, config_dict=settings, log=lambda *_: None)
    slow = {"model": "VBPR", "point": {"learning_rate": 0.001}, "seed": 1, "seconds": 1e6, "best_valid_score": 0.1,
            "valid_score_bigger": True}  # one point tried, and it took 11 days: its other point cannot fit
    with open(out / "tuning.jsonl", "a") as f:
        f.write(json.dumps(slow) + "\n")
    ran, run = [], quick_start.run_recbole_micro
    monkeypatch.setattr(quick_start, "run_recbole_micro",
                        lambda **kw: ran.append((kw["model"], kw["config_dict"]["learning_rate"],
                                                 kw["config_dict"]["seed"])) or run(**kw))
    runs_file = out / "runs.jsonl"
    recorded = runs_file.read_text()
    bpr = f"BPR:learning_rate={chosen['BPR']['point']['learning_rate']}"
    slowed = [dict(r, seconds=1e6) if r["model"] == bpr else r for r in map(json.loads, recorded.splitlines())]
    runs_file.write_text("".join(json.dumps(r) + "\n" for r in slowed))  # the chosen point, not the grid's mean, times it
    with pytest.raises(RunsStopped, match="2 of the 2 runs left wait"):
        run_tuned_comparison(["BPR", "VBPR"], "tiny", [1, 2], out, grid=grid, config_dict=settings,
                             log=lambda *_: None, deadline=time.time() + 3600)
    assert ran == []
    runs_file.write_text(recorded)
    lines = []
    with pytest.raises(RunsStopped, match="1 of the 1 runs left wait"):
        run_tuned_comparison(["BPR", "VBPR"], "tiny", [1, 2], out, grid=grid, config_dict=settings,
                             log=lines.append, deadline=time.time() + 3600)
    assert ran == [("BPR", chosen["BPR"]["point"]["learning_rate"], 2)]
    assert any(line.endswith("1 of those runs, of the 1 rows tuned already, are open now") for line in lines)
    assert (bpr, 2) in {(r["model"], r["seed"]) for r in read_runs(out)}
    assert not (out / "chosen.json").exists() or "VBPR" not in (out / "chosen.json").read_text()

    ran.clear()  # without the deadline: VBPR's last point, then its seed-2 run; BPR's seed-2 run is not repeated
    rows, chosen = run_tuned_comparison(["BPR", "VBPR"], "tiny", [1, 2], out, grid=grid, config_dict=settings,
                                        log=lambda *_: None)
    assert ran == [("VBPR", 0.05, 1), ("VBPR", chosen["VBPR"]["point"]["learning_rate"], 2)]
    assert sorted((r["model"].split(":")[0], r["seed"]) for r in rows) == [("BPR", 1), ("BPR", 2), ("VBPR", 1),
                                                                           ("VBPR", 2)]

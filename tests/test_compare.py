"""Compare mode: the Table-4-style table on hand-made results, and a real resumable run."""
import json

import pytest
from helpers import run_script

from recbole_micro.experiments.charts import difference_title, model_colors, plot_comparison
from recbole_micro.experiments.compare import parse_model_spec
from recbole_micro.experiments.records import read_runs
from recbole_micro.experiments.tables import comparison_table, seed_table


def result_rows(values):
    """Runs from {model: [(recall, precision, ndcg) per seed]}."""
    rows = []
    for model, seeds in values.items():
        for seed, (r, p, n) in enumerate(seeds):
            rows.append({"model": model, "seed": seed, "test_recall@20": r, "test_precision@20": p, "test_ndcg@20": n})
    return rows


def test_table_marks_best_and_second_and_reports_the_improvement_over_the_best_baseline():
    rows = result_rows({
        "BPR": [(0.10, 0.010, 0.05), (0.12, 0.012, 0.07)],  # means .11, .011, .06
        "LightGCN": [(0.14, 0.013, 0.08), (0.14, 0.013, 0.08)],
        "MICRO": [(0.15, 0.012, 0.09), (0.17, 0.014, 0.09)],  # means .16, .013, .09
    })
    table = comparison_table(rows, ["BPR", "LightGCN", "MICRO"], proposed=["MICRO"]).splitlines()
    assert table[0] == "| Model | Recall@20 | Precision@20 | NDCG@20 |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| BPR", "| LightGCN", "| MICRO", "| Improv."]
    # ± the sample std over seeds: sqrt(2 * 0.01^2 / (2 - 1)) = 0.0141
    assert table[2] == "| BPR | 0.1100 ± 0.0141 | <u>0.0110 ± 0.0014</u> | 0.0600 ± 0.0141 |"
    assert table[3] == "| LightGCN | <u>0.1400 ± 0.0000</u> | **0.0130 ± 0.0000** | <u>0.0800 ± 0.0000</u> |"
    # precision ties at .013: both best; then BPR is second
    assert table[4] == "| MICRO | **0.1600 ± 0.0141** | **0.0130 ± 0.0014** | **0.0900 ± 0.0000** |"
    assert table[5] == "| Improv. | +14.29% | +0.00% | +12.50% |"


def test_rows_say_their_number_of_seeds_while_it_differs():
    rows = result_rows({"BPR": [(0.10, 0.010, 0.05)], "MICRO": [(0.15, 0.012, 0.09), (0.17, 0.014, 0.09)]})
    table = comparison_table(rows, ["BPR", "MICRO"], proposed=["MICRO"]).splitlines()
    assert table[2].startswith("| BPR (1 seed) | <u>0.1000</u> |") and table[3].startswith("| MICRO (2 seeds) | **0.1600 ± 0.0141**")


def test_seed_table_gives_every_seed_and_the_paired_difference_from_the_reference():
    rows = result_rows({
        "MICRO": [(0.30, 0, 0), (0.20, 0, 0), (0.25, 0, 0)],
        "BPR": [(0.32, 0, 0), (0.18, 0, 0), (0.22, 0, 0)],  # diffs +.02, -.02, -.03: mean -.01
        "LightGCN": [(0.31, 0, 0)],  # seed 0 only
    })
    rows = [r for r in rows if not (r["model"] == "LightGCN" and r["seed"] != 0)]
    table = seed_table(rows, ["MICRO", "BPR", "LightGCN", "SGL"], reference="MICRO").splitlines()
    assert table[0] == ("| Model | seed 0 | seed 1 | seed 2 | mean test recall@20 | − MICRO, per seed | mean − MICRO |")
    assert len(table) == 5, "SGL has no runs: no row"
    assert table[2] == "| MICRO | 0.3000 | 0.2000 | 0.2500 | 0.2500 ± 0.0500 | | |"
    assert table[3] == "| BPR | 0.3200 | 0.1800 | 0.2200 | 0.2400 ± 0.0721 | +0.0200, -0.0200, -0.0300 | -0.0100 |"
    assert table[4] == "| LightGCN | 0.3100 |  |  | 0.3100 (1 seed) | +0.0100 | +0.0100 |"
    # without a reference: values only
    assert seed_table(rows, ["BPR"]).splitlines()[2] == "| BPR | 0.3200 | 0.1800 | 0.2200 | 0.2400 ± 0.0721 |"


def test_plot_writes_a_png(tmp_path):
    rows = result_rows({"BPR": [(0.1, 0.01, 0.05)], "MICRO": [(0.2, 0.02, 0.1)]})
    path = plot_comparison(rows, ["BPR", "MICRO"], tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_the_difference_panel_title_wraps_a_long_reference_at_its_commas():
    # unwrapped, Table 4's reference label ran over the NDCG panel's title beside it
    title = difference_title("recall@20", "MICRO:cl_anchors=batch,learning_rate=0.0005,reg_weight=0.001", width=34)
    assert title.splitlines() == ["Recall@20 per seed, minus", "MICRO:cl_anchors=batch,", "learning_rate=0.0005,",
                                  "reg_weight=0.001"]
    assert difference_title("recall@20", "MICRO").splitlines() == ["Recall@20 per seed, minus", "MICRO"]
    # a part longer than the width stays whole, on a line of its own
    assert difference_title("ndcg@20", "M:a=1,b=" + "9" * 40, width=10).splitlines()[1:] == ["M:a=1,", "b=" + "9" * 40]


@pytest.mark.parametrize("n", [2, 10, 12, 20, 25])
def test_every_model_gets_its_own_colour(n):
    # the papers' Table 4 has 10 rows and ours 12: matplotlib's cycle repeats after 10
    assert len(set(model_colors(n))) == n


def test_compare_mode_runs_every_model_and_seed_once_and_resumes(tiny):
    config_file = tiny.write_config()
    out = tiny.root / "cmp"
    args = ["-d", "tiny", f"--config_files={config_file}", "--epochs=1", "--state=INFO", "--compare", "BPR", "VBPR",
            "--proposed", "VBPR", "--seeds", "1", "2", "--out", str(out)]
    first = run_script(*args, cwd=tiny.root)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = read_runs(out)
    assert sorted((r["model"], r["seed"]) for r in runs) == [("BPR", 1), ("BPR", 2), ("VBPR", 1), ("VBPR", 2)]
    for run in runs:
        config = json.loads((out / run["config"]).read_text())
        assert config["seed"] == run["seed"] and config["model"] == run["model"] and config["epochs"] == 1
        log = (out / run["log"]).read_text()
        assert log.count("best valid") == 1, "each run's log holds that run only"  # not the first run's file
        assert f"seed = {run['seed']}\n" in log
        assert {"test_recall@10", "test_recall@20", "valid_ndcg@20", "test_precision@10"} <= set(run)
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == "| Model | Recall@20 | Precision@20 | NDCG@20 |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| BPR", "| VBPR", "| Improv."]
    assert sum("**" in line for line in table[2:4]) >= 1
    header = (out / "runs.csv").read_text().splitlines()[0].split(",")
    assert {"model", "seed", "config", "log", "test_recall@20"} <= set(header)
    assert (out / "chart.png").stat().st_size > 5000
    seeds = (out / "seeds.md").read_text().splitlines()
    assert seeds[0].startswith("| Model | seed 1 | seed 2 |") and seeds[0].endswith("| mean − VBPR |")
    assert [line.split(" | ")[0] for line in seeds[2:]] == ["| BPR", "| VBPR"]

    second = run_script(*args, cwd=tiny.root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done before, skipped") == 4
    assert len(read_runs(out)) == 4


@pytest.mark.parametrize("bad, message", [("Foo", "Foo"), ("MICRO:use_specific", "write settings as key=value")])
def test_compare_mode_rejects_a_bad_model_before_running_anything(tiny, bad, message):
    result = run_script("-d", "tiny", "--compare", "BPR", bad, "--out", str(tiny.root / "cmp"), cwd=tiny.root)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tiny.root / "cmp" / "runs.jsonl").exists()


@pytest.mark.parametrize("models, proposed", [(["BPR"], ["MICRO"])])
def test_table_without_a_proposed_model_has_no_improvement_row(models, proposed):
    rows = result_rows({"BPR": [(0.1, 0.01, 0.05)]})
    assert "Improv." not in comparison_table(rows, models, proposed)


def test_model_specs_carry_row_settings():
    assert parse_model_spec("MICRO") == ("MICRO", {})
    assert parse_model_spec("MICRO:use_specific=False,knn_k=20,cl_anchors=batch") == (
        "MICRO", {"use_specific": False, "knn_k": 20, "cl_anchors": "batch"})
    with pytest.raises(ValueError, match="key=value"):
        parse_model_spec("MICRO:use_specific")


def test_compare_mode_runs_ablation_rows_with_their_settings(tiny):
    config_file = tiny.write_config(knn_k=4)
    out = tiny.root / "ablations"
    result = run_script("-d", "tiny", f"--config_files={config_file}", "--epochs=1", "--compare", "MICRO",
                        "MICRO:use_specific=False", "--seeds", "3", "--out", str(out), cwd=tiny.root)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {r["model"]: r for r in read_runs(out)}
    assert set(runs) == {"MICRO", "MICRO:use_specific=False"}
    configs = {m: json.loads((out / r["config"]).read_text()) for m, r in runs.items()}
    assert configs["MICRO"]["use_specific"] is True and configs["MICRO:use_specific=False"]["use_specific"] is False
    assert "| MICRO:use_specific=False |" in (out / "table.md").read_text()


def test_variants_of_a_proposed_model_are_not_its_baselines():
    rows = result_rows({"LightGCN": [(0.30, 0.1, 0.2)], "MICRO": [(0.33, 0.1, 0.2)],
                        "MICRO:cl_anchors=batch": [(0.36, 0.1, 0.2)]})
    table = comparison_table(rows, ["LightGCN", "MICRO", "MICRO:cl_anchors=batch"], proposed=["MICRO"])
    assert table.splitlines()[-1].startswith("| Improv. | +20.00% |")  # best MICRO row against LightGCN


def test_a_shared_row_is_adopted_from_another_comparison_with_its_config_and_log(tmp_path):
    from recbole_micro.experiments.records import adopt_runs

    src, dst = tmp_path / "table", tmp_path / "ablations"
    for sub in ("configs", "logs"):
        (src / sub).mkdir(parents=True)
    rows = [{"model": m, "seed": s, "config": f"configs/{m}-seed{s}.json", "log": f"logs/{m}-seed{s}.log",
             "test_recall@20": 0.1 * s} for m in ("MICRO:learning_rate=0.001", "LightGCN") for s in (1, 2)]
    (src / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        (src / r["config"]).write_text(r["model"])
        (src / r["log"]).write_text("log of " + r["model"])
    (src / "diagnostics").mkdir()
    (src / "diagnostics" / "MICRO_learning_rate=0.001-seed2.json").write_text("{}")
    dst.mkdir()
    (dst / "runs.jsonl").write_text(json.dumps({**rows[0], "test_recall@20": 0.5}) + "\n")  # seed 1 already there
    assert adopt_runs(src, dst, ["MICRO:learning_rate=0.001"]) == 1
    got = sorted((r["model"], r["seed"], r["test_recall@20"]) for r in read_runs(dst))
    assert got == [("MICRO:learning_rate=0.001", 1, 0.5), ("MICRO:learning_rate=0.001", 2, 0.2)]
    assert (dst / rows[1]["log"]).read_text() == "log of MICRO:learning_rate=0.001" and not (dst / rows[2]["config"]).exists()
    assert (dst / "diagnostics" / "MICRO_learning_rate=0.001-seed2.json").read_text() == "{}"
    assert adopt_runs(src, dst, ["MICRO:learning_rate=0.001"]) == 0


def test_a_run_recorded_twice_counts_once(tmp_path):
    rows = [{"model": "BPR", "seed": 1, "test_recall@20": 0.1}, {"model": "BPR", "seed": 2, "test_recall@20": 0.2},
            {"model": "BPR", "seed": 1, "test_recall@20": 0.1}]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [(r["model"], r["seed"]) for r in read_runs(tmp_path)] == [("BPR", 1), ("BPR", 2)]


def test_compare_diagnoses_the_graph_models_runs_beside_the_results(tiny):
    from recbole_micro.experiments.compare import run_comparison

    out = tiny.root / "cmp"
    run_comparison(["LATTICE", "BPR"], "tiny", [1], out, config_dict=tiny.config_dict(epochs=1, knn_k=4),
                   log=lambda *_: None, diagnose=True)
    assert sorted(p.name for p in (out / "diagnostics").iterdir()) == ["LATTICE-seed1.json"]  # BPR has no graphs
    found = json.loads((out / "diagnostics" / "LATTICE-seed1.json").read_text())
    assert found["model"] == "LATTICE" and set(found["raw graphs"]) == {"visual", "textual"}
    weights = found["trained"]["modality weights (LATTICE Eq. 6)"]
    assert set(weights) == {"visual", "textual"} and sum(weights.values()) == pytest.approx(1.0, abs=1e-3)


def test_the_compare_only_flags_are_refused_without_compare(tiny):
    result = run_script("-m", "BPR", "-d", "tiny", "--diagnose", cwd=tiny.root)
    assert result.returncode == 2 and "--diagnose: only with --compare" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_line_still_being_appended_is_left_for_the_next_read(tmp_path):
    from recbole_micro.experiments.records import read_jsonl

    (tmp_path / "runs.jsonl").write_text(json.dumps({"model": "BPR", "seed": 1}) + '\n{"model": "BP')
    assert read_jsonl(tmp_path / "runs.jsonl") == [{"model": "BPR", "seed": 1}]
    (tmp_path / "runs.jsonl").write_text('{"model": "BPR", "seed": 1}\n{"broken"\n')
    with pytest.raises(ValueError):  # a bad line that is complete is an error, not skipped
        read_jsonl(tmp_path / "runs.jsonl")

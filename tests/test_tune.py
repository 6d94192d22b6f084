"""Tune mode: shipped params files, the sweep tables and plots, and a 2-point run through the script."""
import csv
import math
import sys

import pytest
import yaml
from helpers import REPO, run_script
from recbole.trainer import HyperTuning

from recbole_micro.experiments.tune import params_in_file, plot_sensitivity, sensitivity_rows

HYPER_FILES = sorted((REPO / "hyper").rglob("*.hyper"))


def test_there_is_a_params_file_for_every_compared_model():
    names = {path.stem.split("-")[0] for path in HYPER_FILES}
    assert {"MICRO", "LATTICE", "VBPR", "MMGCN", "GRCN", "BPR", "LightGCN", "NGCF", "SGL", "ItemKNN",
            "FREEDOM", "BM3", "LGMRec", "MGCN"} <= names


@pytest.mark.parametrize("path", HYPER_FILES, ids=lambda p: str(p.relative_to(REPO / "hyper")))
def test_shipped_params_files_parse_and_name_settings_the_model_has(path, tmp_path, monkeypatch):
    from recbole_micro.config import Config

    space = HyperTuning._build_space_from_file(str(path))
    assert list(space) == params_in_file(path) and space
    monkeypatch.setattr(sys, "argv", ["pytest"])
    model = path.stem.split("-")[0]
    config = Config(model=model, dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    unknown = [name for name in space if name not in config.final_config_dict]
    assert not unknown, f"{path.name} tunes settings {model} does not have: {unknown}"


def test_the_papers_learning_rate_and_l2_grids():
    lines = (REPO / "hyper" / "MICRO.hyper").read_text().splitlines()
    assert lines == ["learning_rate choice [1e-4,5e-4,1e-3,5e-3]", "reg_weight choice [0,1e-5,1e-4,1e-3]"]


def test_sensitivity_rows_average_over_the_other_parameters():
    trials = [
        {"knn_k": 10, "lr": 1, "test_recall@20": 0.2, "test_ndcg@20": 0.1},
        {"knn_k": 10, "lr": 2, "test_recall@20": 0.4, "test_ndcg@20": 0.3},
        {"knn_k": 5, "lr": 1, "test_recall@20": 0.1, "test_ndcg@20": 0.05},
    ]
    rows = sensitivity_rows(trials, "knn_k")
    assert [r["knn_k"] for r in rows] == [5, 10] and [r["points"] for r in rows] == [1, 2]
    assert rows[1]["test_recall@20"] == pytest.approx(0.3) and rows[1]["test_ndcg@20"] == pytest.approx(0.2)
    modalities = sensitivity_rows([{"use_modalities": '["visual"]', "test_recall@20": 0.1, "test_ndcg@20": 0.0},
                                   {"use_modalities": "[]", "test_recall@20": 0.3, "test_ndcg@20": 0.0}], "use_modalities")
    assert [r["use_modalities"] for r in modalities] == ['["visual"]', "[]"]


def test_plot_sensitivity_writes_a_png(tmp_path):
    rows = [{"knn_k": k, "test_recall@20": 0.1 * i, "test_ndcg@20": 0.05 * i} for i, k in enumerate([5, 10, 20])]
    path = plot_sensitivity(rows, "knn_k", tmp_path / "k.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_tune_mode_tries_every_point_and_writes_the_best_as_reusable_yaml(tiny):
    config_file = tiny.write_config()
    params = tiny.root / "vbpr.hyper"
    params.write_text("embedding_size choice [4,16]\n")
    out = tiny.root / "tuned"
    result = run_script("-m", "VBPR", "-d", "tiny", f"--config_files={config_file}", "--tune", str(params),
                        "--out", str(out), "--epochs=1", cwd=tiny.root)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    assert sorted(int(t["embedding_size"]) for t in trials) == [4, 16]
    best = max(trials, key=lambda t: float(t["best_valid_score"]))
    settings = yaml.safe_load((out / "best.yaml").read_text())
    assert settings == {"embedding_size": int(best["embedding_size"])}
    assert f"--config_files={out}/best.yaml" in result.stdout
    assert (out / "hyper_result.txt").is_file() and (out / "sensitivity-embedding_size.png").stat().st_size > 5000
    with open(out / "sensitivity-embedding_size.csv", newline="") as f:
        assert [r["embedding_size"] for r in csv.DictReader(f)] == ["4", "16"]


def test_ray_tune_path_runs_trials_through_our_objective(tiny):
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow", reason="Ray Tune 2.6 needs pyarrow (pip install \"ray[tune]\")")
    from recbole_micro.experiments.tune import ray_search_space, run_ray_tuning

    config_file = tiny.write_config()
    params = tiny.root / "vbpr.hyper"
    params.write_text("embedding_size choice [4,16]\nlearning_rate loguniform -9.2,-4.6\n")
    space = ray_search_space(params)
    assert set(space) == {"embedding_size", "learning_rate"}
    assert space["learning_rate"].lower == pytest.approx(math.exp(-9.2))  # RecBole's bounds are natural logs
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        analysis = run_ray_tuning(params, "VBPR", "tiny", tiny.root / "ray_out", num_samples=2,
                                  config_file_list=[config_file])
    finally:
        ray.shutdown()
    assert len(analysis.trials) == 2
    for trial in analysis.trials:
        assert trial.status == "TERMINATED", trial.error_file
        assert trial.last_result["valid_score"] == trial.last_result["valid_recall@20"]  # valid_metric: Recall@20
        assert 0.0 <= trial.last_result["test_recall@20"] <= 1.0
        assert trial.config["embedding_size"] in (4, 16)
    by_valid = max(analysis.trials, key=lambda t: t.last_result["valid_score"])
    assert analysis.best_trial is by_valid  # chosen on validation, whatever the test scores say
    best = yaml.safe_load((tiny.root / "ray_out" / "best.yaml").read_text())
    assert best == analysis.best_config == by_valid.config


def test_ray_tune_report_selects_on_validation_and_only_carries_test():
    from recbole_micro.quick_start import ray_tune_report

    result = {"best_valid_score": 0.2, "best_valid_result": {"recall@20": 0.2}, "test_result": {"recall@20": 0.9}}
    assert ray_tune_report(result) == {"valid_score": 0.2, "valid_recall@20": 0.2, "test_recall@20": 0.9}

"""The benchmark scripts run end to end on tiny sizes (timings are not asserted; re-scored metrics are)."""
import csv
import math
import subprocess
import sys

import pytest
from helpers import REPO


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def measured(value):
    """A time was measured: a finite number of seconds, rounded (so a fast one may read 0.0)."""
    return math.isfinite(float(value)) and float(value) >= 0


def test_scale_benchmark_quick_mode_writes_both_tables(tmp_path):
    command = [
        sys.executable, str(REPO / "benchmarks" / "scale.py"), "--quick", "--models", "MICRO", "MICRO batch", "MICRO amp",
        "--sweep", "300", "--ann", "400", "--peaks", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    models = read(tmp_path / "out" / "quick" / "models.csv")
    assert [(r["scale"], r["model"]) for r in models] == [("tiny", "MICRO"), ("tiny", "MICRO batch"), ("tiny", "MICRO amp")]
    for row in models:
        assert (row["users"], row["items"], row["train_rows"]) == ("120", "200", "1200")
        assert row["timed_batches"] == row["batches"] == "2" and row["extrapolated"] == "False"
        assert all(measured(row[f]) for f in ("load_s", "init_s", "epoch_s", "eval_s")) and float(row["peak_rss_gb"]) > 0.1
    (sweep,) = read(tmp_path / "out" / "quick" / "sweep.csv")
    assert sweep["items"] == "300" and float(sweep["dense_nxn_gb"]) == 0.0
    assert all(measured(sweep[f]) for f in ("knn_s", "propagate_s", "cl_exact_s", "cl_batch_s"))
    ann = read(tmp_path / "out" / "quick" / "ann.csv")
    assert [(r["items"], r["features"]) for r in ann] == [("400", "gaussian"), ("400", "clustered")]
    assert all(0.5 <= float(r["recall"]) <= 1.0 and measured(r["faiss_s"]) and measured(r["exact_s"]) for r in ann)
    peaks = read(tmp_path / "out" / "quick" / "peaks.csv")
    assert [(r["kernel"], r["dtype"]) for r in peaks] == [
        ("GEMM", "float32"), ("GEMM", "bfloat16"), ("fused L_C fwd+bwd", "float32"), ("fused L_C fwd+bwd", "bfloat16")]
    assert all(measured(r["seconds"]) and float(r["gflops"]) > 0 for r in peaks)
    # a re-run replaces its own rows and keeps the others
    again = command[:command.index("--models")] + ["--models", "MICRO"] + ["--sweep", "300"] + command[command.index("--work"):]
    subprocess.run(again, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=True)
    assert sorted(r["model"] for r in read(tmp_path / "out" / "quick" / "models.csv")) == ["MICRO", "MICRO amp", "MICRO batch"]


def test_the_random_dataset_has_the_interaction_count_asked_for(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from scale import write_random_dataset

    out = write_random_dataset(tmp_path, "sparse", n_users=30, n_items=50, per_user=6, n_inter=200, dims={"visual": 4})
    rows = {split: len((out / f"sparse.{split}.inter").read_text().splitlines()) - 1 for split in ("train", "valid", "test")}
    assert rows == {"train": 200 - 60, "valid": 30, "test": 30}  # 20 users with 7 items, 10 with 6


def test_evaluate_checkpoint_rescores_a_saved_model_in_a_fresh_process(tiny):
    import json

    from recbole_micro.quick_start import run_recbole_micro

    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict(epochs=2))
    out = tiny.root / "eval.json"
    command = [sys.executable, str(REPO / "benchmarks" / "evaluate_checkpoint.py"), result["saved_model_file"], "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tiny.root)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(out.read_text())
    assert (scores["model"], scores["dataset"]) == ("VBPR", "tiny")
    assert scores["valid"] == dict(result["best_valid_result"])
    assert scores["test"] == dict(result["test_result"])


def test_graph_diagnostics_count_shared_users_by_hand(tmp_path):
    import numpy as np
    import scipy.sparse as sp
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from recbole_micro.experiments.diagnostics import graph_pairs, losses_from_log, shared_user_rate
    from recbole_micro.model.layers import SparseGraph

    # items 1..3 (0 is PAD); users: item 1 {A, B}, item 2 {B}, item 3 {C}
    item_users = sp.csr_matrix(np.array([[0, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    graph = SparseGraph(torch.tensor([[0, 0], [1, 2], [1, 3], [3, 0]]), torch.tensor([[0.0, 0], [0.5, 0.5], [0.4, 0.6], [1.0, 0]]))
    pairs = graph_pairs(graph, np.array([1, 2, 3]))
    assert pairs.tolist() == [[1, 2], [2, 1], [2, 3]]  # self-loops, PAD and zero weights left out
    assert shared_user_rate(item_users, pairs) == 2 / 3  # (1, 2) share B both ways; (2, 3) share nobody
    log = tmp_path / "run.log"
    log.write_text("epoch 0 training [time: 1.00s, train_loss1: 0.6900, train_loss2: 0.0010, train_loss3: 0.2000]\n"
                   "epoch 0 evaluating [time: 0.50s, valid_score: 0.120000]\n"
                   "epoch 1 training [time: 1.00s, train_loss1: 0.5000, train_loss2: 0.0020, train_loss3: 0.1500]\n"
                   "Finished training, best eval result in epoch 0\n")
    parsed = losses_from_log(log)
    assert parsed["best_epoch"] == 0
    assert parsed["per_epoch"] == [{"epoch": 0, "loss1": 0.69, "loss2": 0.001, "loss3": 0.2, "valid_score": 0.12},
                                   {"epoch": 1, "loss1": 0.5, "loss2": 0.002, "loss3": 0.15}]


def test_graph_diagnostics_of_a_trained_micro(tiny):
    """Two modalities: h_s^v and h_s^t are opposite by Eq. 11 (cosine -1); attention means add up to 1."""
    import json

    from recbole_micro.quick_start import run_recbole_micro

    result = run_recbole_micro(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(epochs=2, knn_k=4))
    out = tiny.root / "diagnose.json"
    command = [sys.executable, str(REPO / "benchmarks" / "diagnose_graphs.py"), "--checkpoint",
               result["saved_model_file"], "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tiny.root)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(out.read_text())
    assert set(found["raw graphs"]) == {"visual", "textual"}
    for quality in found["raw graphs"].values():
        assert 0 <= quality["neighbours_share_a_user"] <= 1 and quality["edges"] > 0
    trained = found["trained"]
    assert sum(a["mean"] for a in trained["attention (Eq. 7)"].values()) == pytest.approx(1.0, abs=1e-3)
    assert trained["orthogonality (Eqs. 11-13)"]["mean cos(h_s^a, h_s^b)"] == pytest.approx(-1.0, abs=1e-3)
    assert {"visual mixed graph A^m (Eq. 5)", "textual learned graph (transformed features)"} <= set(trained)


def test_cold_start_metrics_by_hand():
    """Recall@k = hits / targets, NDCG@k = DCG / IDCG over min(targets, k) (RecBole's); history and PAD never
    ranked; 'cold items only' ranks among the cold columns."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from cold_start import evaluate, ranking_metrics

    scores = torch.tensor([[9.0, 5.0, 4.0, 3.0, 2.0]])  # item 0 is PAD
    targets = sp.csr_matrix(np.array([[0, 0, 1, 0, 1]]))  # items 2 and 4
    found = ranking_metrics(scores, targets, k=2)  # unmasked: the top 2 are PAD and item 1
    assert found == {"recall@2": 0.0, "ndcg@2": 0.0}
    history = sp.csr_matrix(np.array([[0, 1, 0, 0, 0]]))  # item 1 was trained on: masked
    both = evaluate(scores, targets, history, cold_columns=torch.tensor([3, 4]))
    # all items, top 20 of [2, 3, 4]: hits at ranks 1 and 3
    ideal = 1 + 1 / np.log2(3)
    assert both["all_recall@20"] == 1.0 and both["all_ndcg@20"] == pytest.approx((1 + 1 / np.log2(4)) / ideal)
    # cold items only (3, 4): item 4 at rank 2 is the one hit among the two targets
    assert both["cold_recall@20"] == 0.5 and both["cold_ndcg@20"] == pytest.approx((1 / np.log2(3)) / ideal)


def test_the_reading_of_a_comparison_folder_by_hand(tmp_path):
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    from reading import reading

    (tmp_path / "logs").mkdir()
    (tmp_path / "diagnostics").mkdir()
    runs = [{"model": "MICRO:learning_rate=0.001", "seed": 1, "log": "logs/m.log"}, {"model": "BPR", "seed": 1, "log": ""}]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    (tmp_path / "logs" / "m.log").write_text(
        "epoch 0 training [time: 1.00s, train_loss1: 18.2000, train_loss2: 0.0010, train_loss3: 9.0600, train_loss4: 0.0000]\n"
        "epoch 0 evaluating [time: 0.50s, valid_score: 0.120000]\n"
        "epoch 1 training [time: 1.00s, train_loss1: 5.0000, train_loss2: 0.0020, train_loss3: 8.9000, train_loss4: 0.0025]\n"
        "epoch 1 evaluating [time: 0.50s, valid_score: 0.150000]\n"
        "epoch 2 training [time: 1.00s, train_loss1: 4.0000, train_loss2: 0.0020, train_loss3: 8.8900, train_loss4: 0.0030]\n"
        "Finished training, best eval result in epoch 1\n")
    (tmp_path / "diagnostics" / "MICRO_learning_rate=0.001-seed1.json").write_text(json.dumps({
        "raw graphs": {"text": {"lift": 12.3}, "meta": {"lift": 9.6}},
        "trained": {"text learned graph (transformed features)": {"lift": 9.9},
                    "text mixed graph A^m (Eq. 5)": {"lift": 10.8},
                    "attention (Eq. 7)": {"text": {"mean": 0.42}, "meta": {"mean": 0.58}}}}))
    text = reading(tmp_path)
    assert "| MICRO:learning_rate=0.001 | 1 | 1 | 2 |" in text  # best epoch 1, last epoch 2; BPR has no log
    assert "| MICRO:learning_rate=0.001 | 1 | text | 12.3 | 9.9 | 10.8 | 0.42 |" in text
    assert "| MICRO:learning_rate=0.001 | 1 | meta | 9.6 | None | None | 0.58 |" in text
    assert "| MICRO:learning_rate=0.001 | 1 | 0 | 18.2 | 9.06 | 0.0 |" in text  # the first epoch ...
    assert "| MICRO:learning_rate=0.001 | 1 | 1 | 5.0 | 8.9 | 0.0025 |" in text  # ... and the best


def test_the_amp_report_pairs_each_seed_with_its_float32_run(tmp_path):
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    from amp_report import report

    folder = tmp_path / "tiny"
    (folder / "logs").mkdir(parents=True)
    rows = []
    for seed, fp32, amp in ((1, 0.30, 0.28), (2, 0.34, 0.35)):
        for model, score, curve in (("M", fp32, (0.1, 0.2)), ("M,enable_amp=True", amp, (0.1, 0.25, 0.3))):
            log = f"logs/{model}-{seed}.log"
            (folder / log).write_text("".join(f"valid_score: {v}\n" for v in curve) + "best eval result in epoch 1\n")
            rows.append({"model": model, "seed": seed, "log": log, "test_recall@20": score, "test_ndcg@20": score / 2})
    rows.append({"model": "M,enable_amp=True", "seed": 3, "test_recall@20": 0.5, "test_ndcg@20": 0.2})  # no fp32 pair
    (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = report(tmp_path).splitlines()
    assert lines[2] == ("| tiny | M | recall@20 | 1: 0.3000 / 0.2800 (-0.0200), 2: 0.3400 / 0.3500 (+0.0100) "
                        "| -0.0050 | 0.0283 |")
    assert lines[3].startswith("| tiny | M | ndcg@20 | 1: 0.1500 / 0.1400 (-0.0100)")
    assert lines[-2:] == ["| tiny | 1 | 1 / 1 | 0.2000 / 0.3000 | 0.0250 / 0.0500 over 2 |",
                          "| tiny | 2 | 1 / 1 | 0.2000 / 0.3000 | 0.0250 / 0.0500 over 2 |"]

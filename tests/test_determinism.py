"""Same seed, same result: two runs of every model of ours train to identical weights and metrics."""
import pytest
import torch

from recbole_micro.quick_start import run_recbole_micro
from recbole_micro.checkpoints import load_checkpoint

RUNS = [
    ("VBPR", {}),
    ("MMGCN", {}),
    ("GRCN", {}),
    ("LATTICE", {}),
    ("MICRO", {}),
    ("MICRO", {"cl_anchors": "batch"}),
]


@pytest.mark.parametrize("model, settings", RUNS, ids=[f"{m}-{s.get('cl_anchors', 'all')}" for m, s in RUNS])
def test_two_runs_with_one_seed_are_identical(tiny, model, settings):
    results, weights = [], []
    for _ in range(2):
        result = run_recbole_micro(model=model, dataset="tiny", config_dict=tiny.config_dict(epochs=2, **settings))
        results.append((result["best_valid_score"], dict(result["best_valid_result"]), dict(result["test_result"])))
        weights.append(load_checkpoint(result["saved_model_file"])["state_dict"])
    assert results[0] == results[1]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name  # bit for bit, not just close

"""Same seed, same result: two runs of every model of ours train to identical weights and metrics."""
import os
import subprocess
import sys

import pytest
import torch

from recbole_micro.quick_start import run_recbole_micro
from recbole_micro.trainer.checkpoints import load_checkpoint

RUNS = [
    ("VBPR", {}),
    ("MMGCN", {}),
    ("GRCN", {}),
    ("LATTICE", {}),
    ("MICRO", {}),
    ("MICRO", {"cl_anchors": "batch"}),
    ("FREEDOM", {}),
    ("BM3", {}),
    ("LGMRec", {}),
    ("MGCN", {}),
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


# Five MICRO batches on ml-100k in a fresh process; prints the weights' digest. Big enough for
# the multi-threaded kernels that made fresh processes drift apart before deterministic algorithms.
FRESH_PROCESS_RUN = """
import sys
from recbole_micro.config import Config
from recbole_micro.trainer.distributed import weights_digest
from recbole_micro.quick_start import _build
from recbole_micro.registry import init_seed

sys.argv = sys.argv[:1]
config = Config(model="MICRO", dataset="ml-100k", config_dict={
    "data_path": DATA_PATH, "checkpoint_dir": CHECKPOINTS, "state": "ERROR", "reproducibility": REPRODUCIBLE})
init_seed(config["seed"], config["reproducibility"])
_, (train, _, _), model, trainer = _build(config)
for _, batch in zip(range(5), train):
    trainer.optimizer.zero_grad()
    sum(model.calculate_loss(batch)).backward()
    trainer.optimizer.step()
print(weights_digest(model))
"""


def test_two_fresh_processes_with_one_seed_train_bit_identical_weights(ml100k_dir, tmp_path):
    code = (FRESH_PROCESS_RUN.replace("DATA_PATH", repr(str(ml100k_dir.parent)))
            .replace("CHECKPOINTS", repr(str(tmp_path))).replace("REPRODUCIBLE", "True"))
    digests = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, HF_HUB_OFFLINE="1"))
        assert out.returncode == 0, out.stderr[-2000:]
        digests.append(out.stdout.split()[-1])
    assert digests[0] == digests[1]


def test_reproducibility_turns_on_deterministic_algorithms(tiny):
    run_recbole_micro(model="BPR", dataset="tiny", config_dict=tiny.config_dict(reproducibility=False), saved=False)
    assert not torch.are_deterministic_algorithms_enabled()
    run_recbole_micro(model="BPR", dataset="tiny", config_dict=tiny.config_dict(reproducibility=True), saved=False)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()

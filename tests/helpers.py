"""Helpers shared by the test modules: the tiny dataset, model builders, the script runner, common asserts.

Fixtures live in ``conftest.py``; everything a test module imports lives here.
``TinyDataset`` has 40 users and 30 items with interactions, plus 2 cold-start items that
appear only in ``tiny.item``. Its two modalities are written with rows in a shuffled order
(and a token list), so any code that assumed file order would misalign them.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

N_USERS, N_WARM, N_COLD = 40, 30, 2
VISUAL_DIM, TEXT_DIM = 8, 5
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


YAML_DEFAULT = object()  # a config_dict override that leaves the key to the YAMLs


class TinyDataset:
    """Paths and ground-truth features of the tiny dataset."""

    def __init__(self, root):
        self.root = Path(root)
        self.dir = self.root / "tiny"
        self.dir.mkdir(parents=True)
        rng = np.random.default_rng(7)
        self.item_tokens = [f"it{i:02d}" for i in range(N_WARM + N_COLD)]
        self.cold_tokens = self.item_tokens[N_WARM:]
        cluster = np.arange(N_WARM + N_COLD) % 3
        self.visual = {
            t: np.eye(VISUAL_DIM, dtype=np.float32)[c] + 0.1 * rng.standard_normal(VISUAL_DIM).astype(np.float32)
            for t, c in zip(self.item_tokens, cluster)
        }
        self.textual = {t: rng.standard_normal(TEXT_DIM).astype(np.float32) for t in self.item_tokens}
        lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
        for u in range(N_USERS):
            liked = cluster[:N_WARM] == u % 3
            pool = np.flatnonzero(liked)
            items = rng.choice(pool, size=6, replace=False).tolist()
            items += rng.choice(np.flatnonzero(~liked), size=2, replace=False).tolist()
            for k, i in enumerate(items):
                lines.append(f"u{u:02d}\t{self.item_tokens[i]}\t5\t{1000 + k}")
        (self.dir / "tiny.inter").write_text("\n".join(lines) + "\n")
        item_lines = ["item_id:token\tgenre_vec:float_seq"]
        for t in self.item_tokens:
            item_lines.append(t + "\t" + " ".join(f"{v:.6f}" for v in self.textual[t][:3]))
        (self.dir / "tiny.item").write_text("\n".join(item_lines) + "\n")
        self.write_modality("visual", self.visual, rng)
        self.write_modality("textual", self.textual, rng)

    def write_modality(self, name, table, rng=None, tokens=None, dtype=np.float32):
        """Write ``table`` ({token: vector}) as tiny.<name>.npy + .tokens, rows shuffled."""
        tokens = list(table) if tokens is None else tokens
        order = (rng or np.random.default_rng(0)).permutation(len(tokens))
        tokens = [tokens[i] for i in order]
        np.save(self.dir / f"tiny.{name}.npy", np.stack([table[t] for t in tokens]).astype(dtype))
        (self.dir / f"tiny.{name}.tokens").write_text("".join(t + "\n" for t in tokens))
        return tokens

    def modalities(self, *names):
        names = names or ("visual", "textual")
        return {n: {"file": f"tiny.{n}.npy", "tokens": f"tiny.{n}.tokens"} for n in names}

    def config_dict(self, **overrides):
        """Settings for the tiny dataset; an override of ``YAML_DEFAULT`` drops that key, so the YAMLs decide it."""
        config = {
            "data_path": str(self.root),
            "checkpoint_dir": str(self.root / "saved"),
            "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id"]},
            "modalities": self.modalities(),
            "use_gpu": False,
            "epochs": 1,
            "eval_batch_size": 64,
            "train_batch_size": 64,
            "state": "WARNING",
            "show_progress": False,
        }
        config.update(overrides)
        return {key: value for key, value in config.items() if value is not YAML_DEFAULT}

    def write_config(self, name="tiny.yaml", **overrides):
        import yaml

        path = self.root / name
        path.write_text(yaml.safe_dump(self.config_dict(**overrides)))
        return path


def build(model, tiny_dataset, **overrides):
    """Config, dataset and train/valid/test dataloaders for ``model`` on the tiny dataset."""
    from recbole.data import data_preparation

    from recbole_micro.config import Config
    from recbole_micro.registry import create_dataset, init_seed

    config = Config(model=model, dataset="tiny", config_dict=tiny_dataset.config_dict(**overrides))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


SMALL = {"knn_k": 4, "embedding_size": 8}


def make(model_class, tiny, **overrides):
    """``(model, dataset, train loader)`` for a graph model on the tiny dataset with small settings, seed 0."""
    config, dataset, (train, valid, test) = build(model_class.__name__, tiny, **{**SMALL, **overrides})
    torch.manual_seed(0)
    return model_class(config, train._dataset), dataset, train


def batch_of(train):
    """The first training batch."""
    return next(iter(train))


SCRIPT = REPO / "run_recbole_micro.py"


def run_script(*args, cwd):
    """Run run_recbole_micro.py as a user would (a subprocess, hub offline); the CompletedProcess."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def requires_shared(*parts):
    """Skip unless ``../shared/<parts>`` exists (the shared data is optional)."""
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (shared data is optional)")


def assert_every_parameter_learns(model):
    """After a backward pass: every parameter got a non-zero gradient."""
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def assert_full_sort_agrees_with_predict(model, batch):
    """The full-ranking score of each (user, item) in ``batch`` equals ``predict``'s."""
    model.eval()
    with torch.no_grad():
        full = model.full_sort_predict(batch).view(len(batch), -1)
        single = model.predict(batch)
    torch.testing.assert_close(full[torch.arange(len(batch)), batch[model.ITEM_ID]], single)


def device_params():
    """``cpu`` always, ``cuda`` marked to skip without a GPU: for the device-sensitive tests."""
    cuda = torch.cuda.is_available()
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not cuda, reason="no CUDA GPU")])]

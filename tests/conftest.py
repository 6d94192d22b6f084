"""A deterministic tiny multimodal dataset, built in a temp dir that is also the cwd.

``tiny`` has 40 users and 30 items with interactions, plus 2 cold-start items that appear
only in ``tiny.item``. Its two modalities are written with rows in a shuffled order (and a
token list), so any code that assumed file order would misalign them.
"""
import os
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny dataset; the temp dir is the cwd so RecBole's log/ and saved/ land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["pytest"])
    return TinyDataset(tmp_path)


def build(model, tiny_dataset, **overrides):
    """Config, dataset and train/valid/test dataloaders for ``model`` on the tiny dataset."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_micro.config import Config
    from recbole_micro.utils import create_dataset

    config = Config(model=model, dataset="tiny", config_dict=tiny_dataset.config_dict(**overrides))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """MovieLens-100k materialised once per session, with its cached modalities."""
    from recbole_micro.data.prepared import materialize_ml100k

    path = tmp_path_factory.mktemp("data") / "ml-100k"
    materialize_ml100k(path)
    return path


def requires_shared(*parts):
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (shared data is optional)")


os.environ.setdefault("HF_HUB_OFFLINE", "1")


def assert_every_parameter_learns(model):
    """After a backward pass: every parameter got a non-zero gradient."""
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def assert_full_sort_agrees_with_predict(model, batch):
    """The full-ranking score of each (user, item) in ``batch`` equals ``predict``'s."""
    import torch

    model.eval()
    with torch.no_grad():
        full = model.full_sort_predict(batch).view(len(batch), -1)
        single = model.predict(batch)
    torch.testing.assert_close(full[torch.arange(len(batch)), batch[model.ITEM_ID]], single)

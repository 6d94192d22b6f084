"""Fixtures of the test suite: the tiny multimodal dataset in a temp dir that is also the cwd, and ml-100k.

The dataset itself and every helper the test modules import are in ``helpers.py``.
"""
import os

import pytest
from helpers import TinyDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on a CUDA GPU (skipped without one; benchmarks/gpu_check.sh runs them)")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny dataset; the temp dir is the cwd so RecBole's log/ and saved/ land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["pytest"])
    return TinyDataset(tmp_path)


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """MovieLens-100k materialised once per session, with its cached modalities."""
    from recbole_micro.data.prepared import materialize_ml100k

    path = tmp_path_factory.mktemp("data") / "ml-100k"
    materialize_ml100k(path)
    return path

"""MovieLens-100k's offline modalities: text (MiniLM) and knowledge graph (TF-IDF + SVD)."""
import json

import numpy as np
import pytest

from recbole_micro.data import ml100k
from recbole_micro.data.ml100k import build_knowledge_features, build_text_features, item_texts, knowledge_matrix
from recbole_micro.data.prepared import recbole_ml100k_dir
from recbole_micro.files import build_record_path


class CountingEncoder:
    """Stands in for the sentence encoder: deterministic vectors, counts its calls."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        return np.stack([np.full(4, len(t), dtype=np.float32) for t in texts])


def test_materialised_copy_matches_recbole(ml100k_dir):
    for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.kg", "ml-100k.link"):
        assert (ml100k_dir / name).read_bytes() == (recbole_ml100k_dir() / name).read_bytes()


def test_item_texts_are_title_year_genres(ml100k_dir):
    tokens, texts = item_texts(ml100k_dir / "ml-100k.item")
    assert len(tokens) == len(texts) == 1682
    assert texts[tokens.index("1")] == "Toy Story (1995) Animation, Children's, Comedy"
    assert all("()" not in t for t in texts)  # a missing year leaves no empty brackets


def test_text_cache_reused_and_rebuilt_when_the_input_changes(tmp_path, ml100k_dir):
    data = tmp_path / "ml-100k"
    data.mkdir()
    (data / "ml-100k.item").write_bytes((ml100k_dir / "ml-100k.item").read_bytes())
    out, tokens = data / "ml-100k.text.npy", data / "ml-100k.text.tokens"
    encoder = CountingEncoder()
    build_text_features(data, out, tokens, encoder=encoder)
    build_text_features(data, out, tokens, encoder=encoder)
    assert encoder.calls == 1
    matrix = np.load(out)
    assert matrix.shape == (1682, 4) and tokens.read_text().split("\n")[0] == "1"
    record = json.loads(build_record_path(out).read_text())
    assert record["builder"] == "ml-100k-text" and "ml-100k.item" in record["inputs"]
    lines = (data / "ml-100k.item").read_text().splitlines()
    lines[1] = lines[1].replace("Toy Story", "Toy Story Remastered")
    (data / "ml-100k.item").write_text("\n".join(lines) + "\n")
    build_text_features(data, out, tokens, encoder=encoder)
    assert encoder.calls == 2
    assert np.load(out)[0, 0] == len("Toy Story Remastered (1995) Animation, Children's, Comedy")


def test_knowledge_vectors(ml100k_dir):
    tokens, matrix = knowledge_matrix(ml100k_dir / "ml-100k.link", ml100k_dir / "ml-100k.kg")
    linked = set((ml100k_dir / "ml-100k.link").read_text().split("\n")[1:-1])
    linked = {line.split("\t")[0] for line in linked}
    assert len(linked) == 1598
    assert set(tokens) <= linked and len(tokens) > 1500
    assert matrix.shape == (len(tokens), ml100k.KNOWLEDGE_DIM) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    # The vectors carry the graph: films by one director are far closer than random pairs.
    row = {t: i for i, t in enumerate(tokens)}
    link, kg = ml100k.read_atomic(ml100k_dir / "ml-100k.link"), ml100k.read_atomic(ml100k_dir / "ml-100k.kg")
    entity_item = dict(zip(link["entity_id"], link["item_id"]))
    directed = kg[kg["relation_id"] == "film.film.directed_by"]
    by_director = directed.assign(item=directed["head_id"].map(entity_item)).dropna().groupby("tail_id")["item"]
    pairs = [(a, b) for _, films in by_director for a in films for b in films if a < b and a in row and b in row]
    same_director = np.mean([matrix[row[a]] @ matrix[row[b]] for a, b in pairs])
    random_pairs = np.random.default_rng(0).integers(0, len(tokens), (3000, 2))
    random_mean = np.mean([matrix[a] @ matrix[b] for a, b in random_pairs if a != b])
    assert len(pairs) > 500 and same_director > random_mean + 0.25


def test_knowledge_build_is_deterministic_and_cached(tmp_path, ml100k_dir):
    data = tmp_path / "ml-100k"
    data.mkdir()
    for name in ("ml-100k.link", "ml-100k.kg"):
        (data / name).write_bytes((ml100k_dir / name).read_bytes())
    out, tokens = data / "kg.npy", data / "kg.tokens"
    build_knowledge_features(data, out, tokens)
    first, mtime = np.load(out), out.stat().st_mtime_ns
    build_knowledge_features(data, out, tokens)
    assert out.stat().st_mtime_ns == mtime  # reused, not rebuilt
    out.unlink()
    build_knowledge_features(data, out, tokens)
    np.testing.assert_array_equal(np.load(out), first)


def test_ml100k_dataset_with_real_text_encoder(ml100k_dir, monkeypatch):
    """The full hook on ml-100k: the bundled MiniLM, the KG vectors, unlinked items imputed."""
    import sys

    from recbole_micro.config import Config
    from recbole_micro.registry import create_dataset

    monkeypatch.chdir(ml100k_dir.parent)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    config = Config(model="VBPR", dataset="ml-100k", config_dict={"data_path": str(ml100k_dir.parent), "use_gpu": False})
    dataset = create_dataset(config)
    text = dataset.item_modalities["textual"]
    assert text.shape == (1683, 384)
    np.testing.assert_allclose(np.linalg.norm(text[1:], axis=1), 1, atol=1e-4)
    star_wars, jedi, toy_story = (dataset.token2id("item_id", t) for t in ("50", "181", "1"))
    assert text[star_wars] @ text[jedi] > text[star_wars] @ text[toy_story]
    kg_tokens = set((ml100k_dir / "ml-100k.kg.tokens").read_text().split())
    imputed = dataset.imputed_items["knowledge"]
    assert imputed.sum() == 1682 - len(kg_tokens) >= 84
    mean = dataset.item_modalities["knowledge"][~imputed][1:].mean(axis=0)
    np.testing.assert_allclose(dataset.item_modalities["knowledge"][imputed], np.tile(mean, (imputed.sum(), 1)), rtol=1e-5)
    assert not imputed[0] and not dataset.imputed_items["textual"].any()


@pytest.mark.parametrize("name", ["/no/such/encoder", "sentence-transformers/stsb-roberta-large"])
def test_encoder_is_never_downloaded(name):
    from recbole_micro.data.text_encoder import resolve_encoder_path
    from recbole_micro.errors import TextEncoderError

    with pytest.raises(TextEncoderError, match="never downloaded"):
        resolve_encoder_path(name)

"""Amazon Scientific as a dataset with two real modalities (dataset_prep.scientific)."""
import sys

import numpy as np
import pytest
import yaml
from helpers import REPO, SHARED, requires_shared

sys.path.insert(0, str(REPO))
from dataset_prep.common import PrepError  # noqa: E402
from dataset_prep.scientific import meta_terms, prepare, split_text  # noqa: E402

SOURCE = SHARED / "data" / "amazon-scientific"


class LengthEncoder:
    """Stands in for the sentence encoder: deterministic 4-d vectors."""

    def encode(self, texts, **kwargs):
        return np.stack([np.array([len(t), t.count(" "), 1.0, 0.0], dtype=np.float32) for t in texts])


def test_a_product_text_splits_into_title_categories_and_brand():
    text = ("Gorilla Original Gorilla Glue, Waterproof. 8 ounce Bottle. Industrial & Scientific Tapes, "
            "Adhesives & Sealants Urethane Adhesives. Gorilla. ")
    assert split_text(text) == ("Gorilla Original Gorilla Glue, Waterproof. 8 ounce Bottle",
                                "Tapes, Adhesives & Sealants Urethane Adhesives", "Gorilla")
    assert meta_terms(text) == ["b:gorilla", "c:adhesives", "c:sealants", "c:tapes", "c:urethane"]
    assert split_text("A plain title. ") == ("A plain title", "", "")
    assert meta_terms("A plain title. ") == []


@requires_shared("data", "amazon-scientific", "Scientific.text")
def test_a_slice_of_scientific_prepares_with_both_modalities_aligned(tmp_path):
    lines = []
    out = prepare(SOURCE, tmp_path, max_users=400, encoder=LengthEncoder(), log=lines.append)
    inter = (out / "scientific.inter").read_text().splitlines()
    users = {line.split("\t")[0] for line in inter[1:]}
    assert inter[0] == "user_id:token\titem_id:token" and len(users) == 400
    splits = {s: (out / f"scientific.{s}.inter").read_text().splitlines()[1:] for s in ("train", "valid", "test")}
    assert sum(map(len, splits.values())) == len(inter) - 1  # every interaction in exactly one split
    assert not set(splits["train"]) & set(splits["test"])
    settings = yaml.safe_load((out / "scientific.yaml").read_text())
    assert list(settings["modalities"]) == ["textual", "meta"]
    texts = dict(line.split("\t", 1) for line in (SOURCE / "Scientific.text").read_text().splitlines()[1:])
    tokens = (out / "scientific.textual.tokens").read_text().split()
    textual = np.load(out / "scientific.textual.npy")
    for row in (0, len(tokens) // 2, len(tokens) - 1):  # row r is the text of token r
        assert textual[row, 0] == len(texts[tokens[row]].strip())
    meta_tokens = (out / "scientific.meta.tokens").read_text().split()
    meta = np.load(out / "scientific.meta.npy")
    assert meta.shape == (len(meta_tokens), 64)
    np.testing.assert_allclose(np.linalg.norm(meta, axis=1), 1.0, rtol=1e-5)
    # two products of one brand and category path are nearer than two of different ones
    by_terms = {}
    for t in meta_tokens:
        by_terms.setdefault(tuple(meta_terms(texts[t])), []).append(meta_tokens.index(t))
    twins = next(rows for rows in by_terms.values() if len(rows) >= 2)
    other = next(rows for terms, rows in by_terms.items() if rows[0] != twins[0])[0]
    assert meta[twins[0]] @ meta[twins[1]] > meta[twins[0]] @ meta[other]
    assert any("interactions" in line for line in lines)


@requires_shared("data", "amazon-scientific", "Scientific.text")
def test_users_with_too_few_distinct_items_are_left_out_and_reported(tmp_path):
    from dataset_prep.scientific import read_histories

    short = [u for u, items in read_histories(SOURCE) if len(set(items)) < 3]
    assert short  # the shared file has two such users (repeated purchases)
    lines = []
    out = prepare(SOURCE, tmp_path, encoder=LengthEncoder(), log=lines.append,
                  max_users=max(int(u) for u in short) + 1)
    users = {line.split("\t")[0] for line in (out / "scientific.inter").read_text().splitlines()[1:]}
    assert not users & set(short)
    assert any(f"{len(short)} users with fewer than 3 distinct items left out" in line for line in lines)


def test_a_missing_source_names_the_folder(tmp_path):
    with pytest.raises(PrepError, match="Scientific.item2index not found: pass --source"):
        prepare(tmp_path / "nowhere", tmp_path / "out", encoder=LengthEncoder(), log=lambda *a: None)

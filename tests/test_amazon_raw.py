"""The raw Amazon 2014 converter and the text pipeline, on fixtures in the exact real formats."""
import gzip
import hashlib
import json
import sys

import numpy as np
import pytest
from helpers import REPO, SHARED, requires_shared

sys.path.insert(0, str(REPO))
from dataset_prep.amazon_raw import convert, item_text, read_image_features, read_meta  # noqa: E402
from dataset_prep.common import PrepError  # noqa: E402
from dataset_prep.text_features import read_item_texts, write_text_features  # noqa: E402

REVIEWS = [
    {"reviewerID": "U2", "asin": "B000000003", "overall": 4.0, "unixReviewTime": 300},
    {"reviewerID": "U1", "asin": "B000000001", "overall": 5.0, "unixReviewTime": 100},
    {"reviewerID": "U1", "asin": "B000000002", "overall": 3.0, "unixReviewTime": 200},
    {"reviewerID": "U2", "asin": "B000000001", "overall": 2.0, "unixReviewTime": 400},
    {"reviewerID": "U1", "asin": "B000000001", "overall": 1.0, "unixReviewTime": 500},  # duplicate pair
]
META = [
    "{'asin': 'B000000001', 'title': 'Soft Blanket', 'description': 'Warm\\tand\\ncozy', "
    "'categories': [['Baby', 'Nursery'], ['Baby']], 'brand': 'Acme'}",
    "{'asin': 'B000000002', 'title': 'Bottle', 'categories': [['Baby', 'Feeding']]}",
    "{'asin': 'B000000009', 'title': 'Not in the reviews'}",
]
DIM = 4096


class FakeEncoder:
    """Deterministic stand-in for the sentence encoder (text length and word count)."""

    def encode(self, texts, **kwargs):
        return np.array([[len(t), len(t.split())] for t in texts], dtype=np.float32)


def image_record(asin, value):
    return asin.encode("ascii") + np.full(DIM, value, dtype="<f4").tobytes()


@pytest.fixture
def raw(tmp_path):
    with gzip.open(tmp_path / "reviews_Baby_5.json.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in REVIEWS))
    with gzip.open(tmp_path / "meta_Baby.json.gz", "wt") as f:
        f.write("".join(line + "\n" for line in META))
    (tmp_path / "image_features_Baby.b").write_bytes(
        image_record("B000000001", 1.5) + image_record("B000000009", 9.0) + image_record("B000000003", -2.0)
    )
    return tmp_path


def run(raw, **kwargs):
    args = dict(encoder=FakeEncoder(), log=lambda *a: None)
    args.update(kwargs)
    return convert(raw / "reviews_Baby_5.json.gz", raw / "meta_Baby.json.gz", raw / "image_features_Baby.b",
                   "baby", raw / "out", **args)


def test_exact_outputs(raw):
    out = run(raw)
    assert (out / "baby.inter").read_text().splitlines() == [
        "user_id:token\titem_id:token\trating:float\ttimestamp:float",
        "U2\tB000000003\t4\t300", "U1\tB000000001\t5\t100", "U1\tB000000002\t3\t200", "U2\tB000000001\t2\t400",
    ]
    assert (out / "baby.item").read_text().splitlines() == [
        "item_id:token\ttitle:token_seq\tdescription:token_seq\tcategories:token_seq\tbrand:token_seq",
        "B000000001\tSoft Blanket\tWarm and cozy\tBaby, Nursery\tAcme",
        "B000000002\tBottle\t\tBaby, Feeding\t",
        "B000000003\t\t\t\t",  # no metadata: kept, with empty text
    ]
    assert (out / "baby.visual.tokens").read_text().split() == ["B000000001", "B000000003"]
    visual = np.load(out / "baby.visual.npy")
    assert visual.shape == (2, DIM) and visual[0, 0] == 1.5 and visual[1, -1] == -2.0
    assert (out / "baby.textual.tokens").read_text().split() == ["B000000001", "B000000002"]
    text = "Soft Blanket. Warm and cozy. Baby, Nursery. Acme"
    np.testing.assert_array_equal(np.load(out / "baby.textual.npy")[0], [len(text), len(text.split())])
    for split in ("train", "valid", "test"):
        assert (out / f"baby.{split}.inter").is_file()


def test_rerun_is_byte_identical(raw):
    out = run(raw)
    first = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    run(raw)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == first


def test_official_text_reproduces_the_official_string():
    record = eval(META[0])  # the test's own literal, to build the expected record
    assert item_text(record, official=True) == " Baby Nursery Baby Soft BlanketSoft BlanketWarm\tand cozy"
    assert item_text(record) == "Soft Blanket. Warm and cozy. Baby, Nursery. Acme"


def test_malformed_review_lines_are_reported(raw):
    with gzip.open(raw / "reviews_Baby_5.json.gz", "at") as f:
        f.write("{not json\n")
        f.write(json.dumps({"asin": "B000000001"}) + "\n")  # no reviewerID
    with pytest.raises(PrepError) as err:
        run(raw)
    assert "2 malformed entries" in str(err.value) and "line 6" in str(err.value) and "line 7" in str(err.value)
    out = run(raw, skip_malformed=True)
    assert len((out / "baby.inter").read_text().splitlines()) == 5


def test_meta_is_parsed_as_literals_never_evaluated(raw, tmp_path):
    marker = tmp_path / "pwned"
    with gzip.open(raw / "meta_Baby.json.gz", "at") as f:
        f.write(f"__import__('pathlib').Path({str(marker)!r}).touch()\n")
    with pytest.raises(PrepError, match="line 4"):
        read_meta(raw / "meta_Baby.json.gz", {"B000000001"})
    assert not marker.exists()
    meta = read_meta(raw / "meta_Baby.json.gz", {"B000000001"}, skip_malformed=True)
    assert list(meta) == ["B000000001"]


def test_truncated_image_file(raw):
    path = raw / "image_features_Baby.b"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(PrepError, match="truncated"):
        read_image_features(path, {"B000000001"})


def test_k_core_reports_what_it_removed(raw):
    with gzip.open(raw / "reviews_Baby_5.json.gz", "at") as f:
        for asin in ("B000000001", "B000000002"):
            f.write(json.dumps({"reviewerID": "U3", "asin": asin, "overall": 5.0, "unixReviewTime": 600}) + "\n")
    messages = []
    out = run(raw, kcore=2, log=messages.append)
    assert "  2-core filtering removed 2 interactions, 1 users, 1 items." in messages
    pairs = [tuple(line.split("\t")[:2]) for line in (out / "baby.inter").read_text().splitlines()[1:]]
    assert pairs == [("U1", "B000000001"), ("U1", "B000000002"), ("U3", "B000000001"), ("U3", "B000000002")]
    with pytest.raises(PrepError, match="after 3-core filtering"):
        run(raw, kcore=3)


@requires_shared("data", "amazon-scientific")
def test_text_pipeline_on_real_product_text(tmp_path):
    """Real Amazon product text (Industrial & Scientific) through the offline MiniLM encoder."""
    source = SHARED / "data" / "amazon-scientific" / "Scientific.text"
    lines = source.read_text(encoding="utf-8").splitlines()
    (tmp_path / "sci.text").write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")  # header + 200 items
    tokens, texts = read_item_texts(tmp_path / "sci.text", ["text"])
    assert len(tokens) == 200 and tokens[0] == "B0000223SI"
    shape = write_text_features(tmp_path, "sci", tokens, texts, show_progress=False)
    assert shape == (200, 384)
    matrix = np.load(tmp_path / "sci.textual.npy")
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-4)
    # two PORTER-CABLE sanding rolls that differ only in grit are near-duplicates
    assert matrix[0] @ matrix[1] > 0.9 > float(np.median(matrix @ matrix[0]))
    assert (tmp_path / "sci.textual.tokens").read_text().split() == tokens

"""Every dataset_prep command refuses bad input the same way.

Exit code 2, exactly one line on stderr that starts with ``error:`` and names the file or setting,
no traceback, and nothing on disk changed: each case first fills the output folder with a good
import, spoils one input (empty, header only, Latin-1, wrong types, huge ids, duplicates, a folder
where a file goes, an unreadable file), runs the command's ``main(argv)`` and compares every file
under the test folder, bytes and permissions, before and after.
"""
import gzip
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import REPO

sys.path.insert(0, str(REPO))
from dataset_prep import (  # noqa: E402
    amazon_raw,
    import_mmrec,
    import_official,
    import_pickled,
    scientific,
    split,
    text_features,
)

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class FakeEncoder:
    """Stands in for the sentence encoder: two numbers per text."""

    def encode(self, texts, **kwargs):
        return np.array([[len(t), t.count(" ")] for t in texts], dtype=np.float32)


class OpensAFile:
    """Pickles as a call to ``open(path, "w")``: if it is ever unpickled, the file appears."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(autouse=True)
def fake_encoder(monkeypatch):
    monkeypatch.setattr(text_features, "load_text_encoder", lambda *args, **kwargs: FakeEncoder())


# ---------------------------------------------------------------- what the test compares

def snapshot(root):
    """{path under ``root``: (permissions, bytes)} for every file and folder, hidden ones included."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            readable = path.is_file() and os.access(path, os.R_OK)
            state[str(path.relative_to(root))] = (mode, path.read_bytes() if readable else None)
    return state


def command_line(base, changes, root):
    """argv from ``base`` updated by ``changes``: a value replaces, None removes, True is a bare flag."""
    argv = []
    for key, value in {**base, **changes}.items():
        if value is None:
            continue
        argv += [key] if value is True else [key, str(value).format(root=root)]
    return argv


def run_main(main, argv, capsys):
    """(exit code, stdout, stderr) of ``main(argv)``; argparse's SystemExit counts as its code."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err, names):
    """``err`` is one line, ``error: ...``, naming each of ``names``, and no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    return line


# ---------------------------------------------------------------- what a case does to the inputs

def write(relative, content):
    """Replace the file ``relative`` with ``content`` (bytes, or text written as UTF-8)."""
    def mutate(root):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return mutate


def write_gz(relative, content):
    """Replace the gzip file ``relative`` with ``content`` compressed."""
    return write(relative, gzip.compress(content if isinstance(content, bytes) else content.encode("utf-8")))


def append(relative, text):
    """Add ``text`` at the end of the file ``relative``."""
    def mutate(root):
        with open(root / relative, "a", encoding="utf-8") as f:
            f.write(text)
    return mutate


def save(relative, array, **kwargs):
    """Replace ``relative`` with ``array`` saved by numpy.save."""
    def mutate(root):
        np.save(root / relative, array, **kwargs)
    return mutate


def save_objects(relative):
    """Replace ``relative`` with a .npy of dtype object whose unpickling would create ``UNPICKLED``."""
    def mutate(root):
        array = np.empty(4, dtype=object)
        array[:] = [OpensAFile(root / "UNPICKLED")] * 4
        with open(root / relative, "wb") as f:  # np.save would append .npy to a name without it
            np.save(f, array, allow_pickle=True)
    return mutate


def pickle_to(relative, value):
    """Replace ``relative`` with ``value`` pickled."""
    def mutate(root):
        (root / relative).write_bytes(pickle.dumps(value))
    return mutate


def folder_at(relative):
    """Replace the file ``relative`` by a folder holding one file."""
    def mutate(root):
        path = root / relative
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True)
        (path / "keep.txt").write_text("a user's file\n")
    return mutate


def remove(relative):
    def mutate(root):
        (root / relative).unlink()
    return mutate


def unreadable(relative):
    def mutate(root):
        (root / relative).chmod(0)
    return mutate


def edit_json(relative, change):
    """Rewrite the JSON file ``relative`` as ``change(its value)``."""
    def mutate(root):
        path = root / relative
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return mutate


def nothing(root):
    pass


@dataclass
class Case:
    """One bad input: how it is made, what the error line names, how the command line differs."""

    id: str
    mutate: object = nothing
    names: tuple = ()
    args: dict = field(default_factory=dict)
    needs_non_root: bool = False


def unreadable_case(relative, names):
    return Case(f"unreadable {relative}", unreadable(relative), names, needs_non_root=True)


# ---------------------------------------------------------------- import_mmrec

INTER = "src/toy.inter"
MMREC_ROWS = ["0\t0\t0", "0\t1\t0", "0\t2\t1", "0\t3\t2", "1\t1\t0", "1\t2\t0", "1\t0\t1", "1\t3\t2",
              "2\t3\t0", "2\t0\t0", "2\t1\t1", "2\t2\t2"]
MMREC_HEADER = "userID\titemID\tx_label\n"


def mmrec_inter(*extra, rows=MMREC_ROWS):
    return MMREC_HEADER + "".join(r + "\n" for r in [*rows, *extra])


def write_features(src, n_items=4):
    np.save(src / "image_feat.npy", np.arange(n_items * 3, dtype=np.float32).reshape(n_items, 3))
    np.save(src / "text_feat.npy", np.ones((n_items, 2), dtype=np.float32))


def build_mmrec(root):
    (root / "src").mkdir()
    (root / INTER).write_text(mmrec_inter())
    write_features(root / "src")


MMREC_ARGS = {"--inter": "{root}/" + INTER, "--name": "toy", "--out": "{root}/data"}


def feature_cases(prefix="src/"):
    """The bad feature files every importer with features refuses."""
    image = prefix + "image_feat.npy"
    return [
        Case("features of dtype object, never unpickled", save_objects(image), ("image_feat.npy", "dtype object")),
        Case("features of strings", save(image, np.array([["a"] * 3] * 4)), ("image_feat.npy", "not numbers")),
        Case("features of complex numbers", save(image, np.ones((4, 3), dtype=np.complex64)), ("image_feat.npy",)),
        Case("features 1-D", save(image, np.ones(4, dtype=np.float32)), ("image_feat.npy", "2-D")),
        Case("features with no column", save(image, np.ones((4, 0), dtype=np.float32)), ("image_feat.npy",)),
        Case("features one row short", save(image, np.ones((3, 3), dtype=np.float32)), ("image_feat.npy",)),
        Case("features with NaN", save(image, np.full((4, 3), np.nan, dtype=np.float32)), ("image_feat.npy", "NaN")),
        Case("features not a .npy", write(image, "not numpy\n"), ("image_feat.npy", "numpy.save")),
        Case("features empty", write(image, b""), ("image_feat.npy",)),
        Case("features truncated", lambda root: (root / image).write_bytes((root / image).read_bytes()[:-5]),
             ("image_feat.npy",)),
        Case("features a folder", folder_at(image), ("image_feat.npy", "folder")),
        Case("features missing", remove(prefix + "text_feat.npy"), ("text_feat.npy", "--no-features")),
        unreadable_case(image, ("image_feat.npy",)),
    ]


def output_cases(dataset, modality_file):
    """The output folder's own problems: a folder where a file goes, a bad --name, an --out that is a file."""
    return [
        Case("a folder where the output's feature file goes", folder_at(f"data/{dataset}/{modality_file}"),
             (modality_file, "folder")),
        Case("--name with a slash", args={"--name": "../escape"}, names=("--name",)),
        Case("--name empty", args={"--name": ""}, names=("--name",)),
        Case("--out is a file", write("src/a-file", "x\n"), ("a-file", "--out"), args={"--out": "{root}/src/a-file"}),
        Case("the dataset folder is a file", write("data/other", "x\n"), ("other",), args={"--name": "other"}),
    ]


MMREC_CASES = [
    Case("empty .inter", write(INTER, b""), ("toy.inter", "empty")),
    Case("header only", write(INTER, MMREC_HEADER), ("toy.inter", "no interactions")),
    Case("Latin-1 .inter", write(INTER, mmrec_inter("1\t2\t0\tcaf\xe9").encode("latin-1")),
         ("toy.inter", "line 14", "UTF-8")),
    Case("UTF-16 .inter", write(INTER, mmrec_inter().encode("utf-16")), ("toy.inter", "line 1", "UTF-8")),
    Case("header lacks x_label", write(INTER, "userID\titemID\n0\t1\n"), ("toy.inter", "x_label")),
    Case("a user that is not an id", write(INTER, mmrec_inter("u1\t2\t0")), ("toy.inter", "line 14")),
    Case("an item that is not an id", write(INTER, mmrec_inter("1\ti2\t0")), ("toy.inter", "line 14")),
    Case("a negative item", write(INTER, mmrec_inter("1\t-2\t0")), ("toy.inter", "line 14")),
    Case("a fractional item", write(INTER, mmrec_inter("1\t2.0\t0")), ("toy.inter", "line 14")),
    Case("a label that is not 0, 1 or 2", write(INTER, mmrec_inter("1\t2\t3")), ("toy.inter", "line 14")),
    Case("a label that is a word", write(INTER, mmrec_inter("1\t2\ttrain")), ("toy.inter", "line 14")),
    Case("a line with too few fields", write(INTER, mmrec_inter("1\t2")), ("toy.inter", "line 14")),
    Case("a blank line", write(INTER, mmrec_inter("")), ("toy.inter", "line 14")),
    Case("an id of 5000 digits", write(INTER, mmrec_inter("1\t" + "9" * 5000 + "\t0")), ("toy.inter", "line 14")),
    Case("an item id far beyond the feature rows", write(INTER, mmrec_inter("1\t10000000001\t0")),
         ("toy.inter", "line 14", "10000000001", "image_feat.npy")),
    Case(".inter a folder", folder_at(INTER), ("toy.inter", "folder")),
    Case(".inter missing", remove(INTER), ("toy.inter", "not found")),
    unreadable_case(INTER, ("toy.inter",)),
    Case("--modality without a path", args={"--modality": "visual"}, names=("--modality",)),
    Case("--modality and --image-feat together", args={"--modality": "a={root}/src/image_feat.npy",
                                                       "--image-feat": "{root}/src/image_feat.npy"},
         names=("--modality", "--image-feat")),
    Case("--inter left out", args={"--inter": None}, names=("--inter",)),
    *feature_cases(),
    *output_cases("toy", "toy.visual.npy"),
]


# ---------------------------------------------------------------- import_official

CORE = "src/5-core/"
OFFICIAL_SPLITS = {"train.json": {"0": [0, 1], "1": [1, 2], "2": [3, 0]},
                   "val.json": {"0": [2], "1": [0], "2": [1]},
                   "test.json": {"0": [3], "1": [3], "2": [2]}}
ITEM2ID = {"B0": 0, "B1": 1, "B2": 2, "B3": 3}
USER2ID = {"A0": 0, "A1": 1, "A2": 2}


def build_official(root):
    (root / CORE).mkdir(parents=True)
    for name, value in {**OFFICIAL_SPLITS, "item2id.json": ITEM2ID, "user2id.json": USER2ID}.items():
        (root / CORE / name).write_text(json.dumps(value))
    write_features(root / "src")


OFFICIAL_ARGS = {"--folder": "{root}/src", "--name": "baby", "--out": "{root}/data"}
TRAIN = CORE + "train.json"
ITEMS = CORE + "item2id.json"


def with_user(user, items):
    return edit_json(TRAIN, lambda data: {**data, user: items})


OFFICIAL_CASES = [
    Case("train.json empty", write(TRAIN, b""), ("train.json", "empty")),
    Case("train.json blank", write(TRAIN, "  \n"), ("train.json", "empty")),
    Case("train.json not JSON", write(TRAIN, "{'0': [1]}"), ("train.json", "not valid JSON")),
    Case("train.json a list", write(TRAIN, "[[0, 1]]"), ("train.json", "array", "object")),
    Case("train.json a string", write(TRAIN, '"0: 1"'), ("train.json", "string", "object")),
    Case("train.json null", write(TRAIN, "null"), ("train.json", "null", "object")),
    Case("train.json Latin-1", write(TRAIN, '{"0": [0, 1],\n "caf\xe9": [1]}'.encode("latin-1")),
         ("train.json", "line 2", "UTF-8")),
    Case("train.json nested too deeply", write(TRAIN, "[" * 100000 + "]" * 100000), ("train.json",)),
    Case("a user key that is not an id", with_user("u9", [1]), ("train.json", "u9")),
    Case("items a string", with_user("3", "1 2"), ("train.json", "user 3")),
    Case("items fractional", with_user("3", [1.0]), ("train.json", "user 3")),
    Case("items booleans", with_user("3", [True]), ("train.json", "user 3")),
    Case("items negative", with_user("3", [-1]), ("train.json", "user 3")),
    Case("items an object", with_user("3", {"1": 2}), ("train.json", "user 3")),
    Case("items nested lists", with_user("3", [[1]]), ("train.json", "user 3")),
    Case("items null", with_user("3", None), ("train.json", "user 3")),
    Case("a user key twice", write(TRAIN, '{"0": [0], "1": [1], "0": [2]}'), ("train.json", "'0' twice")),
    Case("a user key twice in two spellings", write(TRAIN, '{"0": [0], "00": [1]}'), ("train.json", "again")),
    Case("no interaction at all", lambda root: [(root / CORE / n).write_text("{}") for n in OFFICIAL_SPLITS],
         ("5-core", "no interactions")),
    Case("item2id.json maps to strings", edit_json(ITEMS, lambda m: {t: f"x{i}" for t, i in m.items()}),
         ("item2id.json", "'x0'", "integer id")),
    Case("item2id.json a list", write(ITEMS, json.dumps(list(ITEM2ID))), ("item2id.json", "array", "object")),
    Case("item2id.json a number", write(ITEMS, "4"), ("item2id.json", "number", "object")),
    Case("item2id.json maps to fractions", edit_json(ITEMS, lambda m: {t: i + 0.5 for t, i in m.items()}),
         ("item2id.json",)),
    Case("item2id.json maps to null", edit_json(ITEMS, lambda m: {**m, "B3": None}), ("item2id.json", "'B3'")),
    Case("item2id.json a key twice", write(ITEMS, '{"B0": 0, "B1": 1, "B2": 2, "B0": 3}'),
         ("item2id.json", "'B0' twice")),
    Case("item2id.json two items on one id", edit_json(ITEMS, lambda m: {**m, "B3": 2}),
         ("item2id.json", "same id")),
    Case("item2id.json with a gap", edit_json(ITEMS, lambda m: {**m, "B3": 7}), ("item2id.json",)),
    Case("item2id.json a token with a tab", edit_json(ITEMS, lambda m: {**m, "B\t3": 4}), ("item2id.json", "tab")),
    Case("item2id.json empty", write(ITEMS, b""), ("item2id.json", "empty")),
    Case("item2id.json a folder", folder_at(ITEMS), ("item2id.json", "folder")),
    Case("an item beyond item2id.json", with_user("3", [4]), ("item2id.json", "4")),
    Case("user2id.json maps to strings", edit_json(CORE + "user2id.json", lambda m: {t: str(i) for t, i in m.items()}),
         ("user2id.json",)),
    Case("user2id.json a list", write(CORE + "user2id.json", "[]"), ("user2id.json", "array")),
    Case("a user missing from user2id.json", with_user("3", [1]), ("user2id.json", "User id 3")),
    Case("a huge item id and no item2id.json",
         lambda root: (remove(ITEMS)(root), with_user("3", [10000000001])(root)),
         ("image_feat.npy", "10000000001", "train.json")),
    Case("train.json a folder", folder_at(TRAIN), ("train.json", "folder")),
    Case("val.json missing", remove(CORE + "val.json"), ("val.json", "not found")),
    unreadable_case(CORE + "test.json", ("test.json",)),
    Case("--folder missing", args={"--folder": "{root}/nowhere"}, names=("nowhere",)),
    *feature_cases(),
    *output_cases("baby", "baby.visual.npy"),
]


# ---------------------------------------------------------------- import_pickled

def split_matrices():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    return train, valid, test


def build_pickled(root):
    (root / "src").mkdir()
    for name, matrix in zip(("trnMat.pkl", "valMat.pkl", "tstMat.pkl"), split_matrices()):
        (root / "src" / name).write_bytes(pickle.dumps(matrix))
    write_features(root / "src")


PICKLED_ARGS = {"--folder": "{root}/src", "--name": "pk", "--out": "{root}/data"}
TRN = "src/trnMat.pkl"


def sparse(rows, cols, values=None, shape=(3, 4), dtype=np.float32):
    values = np.ones(len(rows), dtype=dtype) if values is None else np.asarray(values, dtype=dtype)
    return sp.csr_matrix((values, (rows, cols)), shape=shape)


PICKLED_CASES = [
    Case("trnMat.pkl empty", write(TRN, b""), ("trnMat.pkl", "pickle")),
    Case("trnMat.pkl text", write(TRN, "0 1\n1 2\n"), ("trnMat.pkl", "pickle")),
    Case("trnMat.pkl truncated", lambda root: (root / TRN).write_bytes((root / TRN).read_bytes()[:40]),
         ("trnMat.pkl",)),
    Case("trnMat.pkl a dict", pickle_to(TRN, {"0": [1]}), ("trnMat.pkl",)),
    Case("trnMat.pkl a dense array", pickle_to(TRN, np.ones((3, 4))), ("trnMat.pkl", "ndarray")),
    Case("trnMat.pkl runs code, never unpickled", lambda root: pickle_to(TRN, OpensAFile(root / "UNPICKLED"))(root),
         ("trnMat.pkl", "io.open", "refused")),
    Case("trnMat.pkl of complex values", pickle_to(TRN, sparse([0], [0], dtype=np.complex64)), ("trnMat.pkl", "dtype")),
    Case("the splits disagree on their shape", pickle_to(TRN, sparse([0], [0], shape=(3, 5))), ("trnMat.pkl", "shape")),
    Case("a pair in train and test", pickle_to(TRN, sparse([0, 0], [0, 3])), ("tstMat.pkl", "--allow-overlap")),
    Case("only stored zeros", lambda root: [pickle_to(f"src/{n}", sparse([0], [0], values=[0]))(root)
                                            for n in ("trnMat.pkl", "valMat.pkl", "tstMat.pkl")],
         ("trnMat.pkl", "no interaction")),
    Case("columns far beyond the feature rows", lambda root: [
        pickle_to(f"src/{n}", sparse([k], [10**10 - 1 - k], shape=(3, 10**10)))(root)
        for k, n in enumerate(("trnMat.pkl", "valMat.pkl", "tstMat.pkl"))], ("image_feat.npy", "10000000000")),
    Case("trnMat.pkl a folder", folder_at(TRN), ("trnMat.pkl", "folder")),
    Case("valMat.pkl missing", remove("src/valMat.pkl"), ("valMat.pkl", "not found")),
    unreadable_case(TRN, ("trnMat.pkl",)),
    Case("no --folder and no --train", args={"--folder": None}, names=("--train", "--folder")),
    *feature_cases(),
    *output_cases("pk", "pk.visual.npy"),
]


# ---------------------------------------------------------------- amazon_raw

REVIEWS, META, IMAGES = "src/reviews_Baby_5.json.gz", "src/meta_Baby.json.gz", "src/image_features_Baby.b"
AMAZON_DIM = 4


def asin(k):
    """A ten-character ASIN, as the image records hold them."""
    return f"B{k:09d}"


GOOD_REVIEWS = [{"reviewerID": f"U{u}", "asin": asin(i), "overall": 4.0, "unixReviewTime": 100 * u + i}
                for u in range(3) for i in range(4) if (u + i) % 4 != 3]
GOOD_META = [f"{{'asin': '{asin(i)}', 'title': 'Thing {i}', 'categories': [['Baby', 'Kind {i}']], 'brand': 'Acme'}}"
             for i in range(4)]


def review_lines(*extra):
    return "".join(json.dumps(r) + "\n" for r in GOOD_REVIEWS) + "".join(line + "\n" for line in extra)


def meta_lines(*extra):
    return "".join(line + "\n" for line in [*GOOD_META, *extra])


def image_records(asins):
    return b"".join(a.encode("ascii") + np.full(AMAZON_DIM, k, dtype="<f4").tobytes()
                    for k, a in enumerate(asins))


def build_amazon(root):
    (root / "src").mkdir()
    write_gz(REVIEWS, review_lines())(root)
    write_gz(META, meta_lines())(root)
    (root / IMAGES).write_bytes(image_records([asin(0), asin(1), asin(3)]))


AMAZON_ARGS = {"--reviews": "{root}/" + REVIEWS, "--meta": "{root}/" + META, "--images": "{root}/" + IMAGES,
               "--image-dim": AMAZON_DIM, "--name": "baby", "--out": "{root}/data"}


def bad_review(**fields):
    return write_gz(REVIEWS, review_lines(json.dumps({"reviewerID": "U9", "asin": "B000000001", **fields})))


def bad_meta(line):
    return write_gz(META, meta_lines(line))


AMAZON_CASES = [
    Case("reviews empty", write_gz(REVIEWS, b""), ("reviews_Baby_5.json.gz", "No interactions")),
    Case("reviews not gzip", write(REVIEWS, review_lines()), ("reviews_Baby_5.json.gz", "not gzip")),
    Case("reviews gzip truncated", lambda root: (root / REVIEWS).write_bytes((root / REVIEWS).read_bytes()[:30]),
         ("reviews_Baby_5.json.gz",)),
    Case("reviews Latin-1", write_gz(REVIEWS, (review_lines() + '{"reviewerID": "Ren\xe9"}\n').encode("latin-1")),
         ("reviews_Baby_5.json.gz", "line 10", "UTF-8")),
    Case("a review not JSON", write_gz(REVIEWS, review_lines("{not json")), ("reviews_Baby_5.json.gz", "line 10")),
    Case("a review a list", write_gz(REVIEWS, review_lines("[1, 2]")), ("reviews_Baby_5.json.gz", "line 10")),
    Case("a review without asin", write_gz(REVIEWS, review_lines('{"reviewerID": "U9"}')), ("line 10",)),
    Case("a reviewerID a number", bad_review(reviewerID=9), ("reviews_Baby_5.json.gz", "line 10")),
    Case("an asin with a tab", bad_review(asin="B00000\t001"), ("reviews_Baby_5.json.gz", "line 10")),
    Case("an asin empty", bad_review(asin=" "), ("reviews_Baby_5.json.gz", "line 10")),
    Case("overall a word", bad_review(overall="five"), ("reviews_Baby_5.json.gz", "line 10")),
    Case("overall a list", bad_review(overall=[5]), ("reviews_Baby_5.json.gz", "line 10")),
    Case("overall infinite", write_gz(REVIEWS, review_lines('{"reviewerID": "U9", "asin": "B000000001", "overall": Infinity}')),
         ("reviews_Baby_5.json.gz", "line 10")),
    Case("unixReviewTime a word", bad_review(unixReviewTime="noon"), ("reviews_Baby_5.json.gz", "line 10")),
    Case("unixReviewTime infinite",
         write_gz(REVIEWS, review_lines('{"reviewerID": "U9", "asin": "B000000001", "unixReviewTime": 1e999}')),
         ("reviews_Baby_5.json.gz", "line 10")),
    Case("a user with one review", bad_review(), ("single interaction", "--kcore")),
    Case("meta Latin-1", write_gz(META, (meta_lines() + "{'asin': 'B000000001', 'title': 'Caf\xe9'}\n").encode("latin-1")),
         ("meta_Baby.json.gz", "line 5", "UTF-8")),
    Case("meta not a literal", bad_meta("{'asin': 'B000000001', 'title': open('x')}"),
         ("meta_Baby.json.gz", "line 5", "not a Python literal")),
    Case("meta a list", bad_meta("['B1']"), ("meta_Baby.json.gz", "line 5")),
    Case("meta without asin", bad_meta("{'title': 'x'}"), ("meta_Baby.json.gz", "line 5")),
    Case("meta title a list", bad_meta("{'asin': 'B000000001', 'title': ['x']}"), ("meta_Baby.json.gz", "line 5", "title")),
    Case("meta categories a string", bad_meta("{'asin': 'B000000001', 'categories': 'Baby'}"),
         ("meta_Baby.json.gz", "line 5", "categories")),
    Case("meta categories of numbers", bad_meta("{'asin': 'B000000001', 'categories': [[1, 2]]}"),
         ("meta_Baby.json.gz", "line 5", "categories")),
    Case("meta nested too deeply", bad_meta("[" * 100000 + "]" * 100000), ("meta_Baby.json.gz", "line 5")),
    Case("images truncated", lambda root: (root / IMAGES).write_bytes((root / IMAGES).read_bytes()[:-3]),
         ("image_features_Baby.b", "truncated")),
    Case("images of other items", write(IMAGES, image_records(["C000000000", "C000000001"])), ("image_features_Baby.b", "no record")),
    Case("images a folder", folder_at(IMAGES), ("image_features_Baby.b", "folder")),
    Case("--image-dim 0", args={"--image-dim": 0}, names=("--image-dim",)),
    Case("--image-dim a word", args={"--image-dim": "four"}, names=("--image-dim",)),
    Case("--kcore negative", args={"--kcore": -1}, names=("--kcore",)),
    Case("--kcore leaves nothing", args={"--kcore": 9}, names=("reviews_Baby_5.json.gz", "9-core")),
    Case("--seed beyond numpy's range", args={"--seed": 2**40}, names=("--seed",)),
    Case("--split unknown", args={"--split": "random"}, names=("--split",)),
    Case("reviews a folder", folder_at(REVIEWS), ("reviews_Baby_5.json.gz", "folder")),
    Case("meta missing", remove(META), ("meta_Baby.json.gz", "not found")),
    unreadable_case(REVIEWS, ("reviews_Baby_5.json.gz",)),
    unreadable_case(IMAGES, ("image_features_Baby.b",)),
    *output_cases("baby", "baby.visual.npy"),
]


# ---------------------------------------------------------------- scientific

SCI = "src/"
SCI_INDEX, SCI_INTER, SCI_TEXT = SCI + "Scientific.item2index", SCI + "Scientific.test.inter", SCI + "Scientific.text"
SCI_INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
SCI_HISTORIES = ["0\t0 1\t2", "1\t2 3\t4", "2\t4 5\t0"]
SCI_TEXT_HEADER = "item_id:token\ttext:token_seq\n"


def sci_text_lines(*extra):
    words = [" ".join(f"w{k}x{j}" for j in range(15)) for k in range(6)]
    good = [f"B{k}\tThing {k}. Industrial & Scientific {words[k]}. Brand{k}. " for k in range(6)]
    return SCI_TEXT_HEADER + "".join(line + "\n" for line in [*good, *extra])


def sci_inter(*extra):
    return SCI_INTER_HEADER + "".join(line + "\n" for line in [*SCI_HISTORIES, *extra])


def build_scientific(root):
    (root / SCI).mkdir()
    (root / SCI_INDEX).write_text("".join(f"B{k}\t{k}\n" for k in range(6)))
    (root / SCI_INTER).write_text(sci_inter())
    (root / SCI_TEXT).write_text(sci_text_lines())


SCI_ARGS = {"--source": "{root}/src", "--out": "{root}/data"}

SCIENTIFIC_CASES = [
    Case("item2index empty", write(SCI_INDEX, b""), ("Scientific.item2index", "empty")),
    Case("item2index Latin-1", write(SCI_INDEX, "B0\t0\nB\xe91\t1\n".encode("latin-1")),
         ("Scientific.item2index", "line 2", "UTF-8")),
    Case("item2index an index that is a word", append(SCI_INDEX, "B6\tsix\n"), ("Scientific.item2index", "line 7")),
    Case("item2index a negative index", append(SCI_INDEX, "B6\t-6\n"), ("Scientific.item2index", "line 7")),
    Case("item2index an index twice", append(SCI_INDEX, "B6\t5\n"), ("Scientific.item2index", "line 7", "twice")),
    Case("item2index one field", append(SCI_INDEX, "B6\n"), ("Scientific.item2index", "line 7")),
    Case("test.inter empty", write(SCI_INTER, b""), ("Scientific.test.inter", "empty")),
    Case("test.inter header only", write(SCI_INTER, SCI_INTER_HEADER), ("Scientific.test.inter", "no users")),
    Case("test.inter Latin-1", write(SCI_INTER, sci_inter("\xe9\t0 1\t2").encode("latin-1")),
         ("Scientific.test.inter", "line 5", "UTF-8")),
    Case("an item that is not an index", write(SCI_INTER, sci_inter("3\t0 x\t2")), ("Scientific.test.inter", "line 5")),
    Case("an item missing from item2index", write(SCI_INTER, sci_inter("3\t0 1\t99")),
         ("Scientific.test.inter", "line 5", "Scientific.item2index")),
    Case("an item of 5000 digits", write(SCI_INTER, sci_inter("3\t0 1\t" + "9" * 5000)),
         ("Scientific.test.inter", "line 5")),
    Case("a line without target", write(SCI_INTER, sci_inter("3\t0 1")), ("Scientific.test.inter", "line 5")),
    Case("a user empty", write(SCI_INTER, sci_inter("\t0 1\t2")), ("Scientific.test.inter", "line 5")),
    Case("every user too short", write(SCI_INTER, SCI_INTER_HEADER + "0\t0 0\t1\n"),
         ("Scientific.test.inter", "--max-users")),
    Case("text empty", write(SCI_TEXT, b""), ("Scientific.text", "empty")),
    Case("text header wrong", write(SCI_TEXT, "asin\ttext\nB0\tx\n"), ("Scientific.text", "header")),
    Case("text Latin-1", write(SCI_TEXT, sci_text_lines("B6\tcaf\xe9").encode("latin-1")),
         ("Scientific.text", "line 8", "UTF-8")),
    Case("text an item twice", write(SCI_TEXT, sci_text_lines("B0\tanother text")), ("Scientific.text", "line 8")),
    Case("text too few catalogue terms", write(SCI_TEXT, SCI_TEXT_HEADER + "B0\tThing. Industrial & Scientific a b.\n"),
         ("Scientific.text", "catalogue terms")),
    Case("text a folder", folder_at(SCI_TEXT), ("Scientific.text", "folder")),
    Case("item2index missing", remove(SCI_INDEX), ("Scientific.item2index", "not found", "--source")),
    unreadable_case(SCI_INTER, ("Scientific.test.inter",)),
    Case("--max-users 0", args={"--max-users": 0}, names=("--max-users",)),
    Case("--seed negative", args={"--seed": -1}, names=("--seed",)),
    Case("a folder where the output's feature file goes", folder_at("data/scientific/scientific.meta.npy"),
         ("scientific.meta.npy", "folder")),
    Case("--name with a slash", args={"--name": "a/b"}, names=("--name",)),
]


# ---------------------------------------------------------------- split

TOY = "data/toy/"
SPLIT_PAIRS = [(u, f"i{k}") for u in "abc" for k in range(4)]
INTER_HEADER = "user_id:token\titem_id:token\n"


def toy_inter(*extra):
    return INTER_HEADER + "".join(f"{u}\t{i}\n" for u, i in SPLIT_PAIRS) + "".join(line + "\n" for line in extra)


def build_split(root):
    (root / TOY).mkdir(parents=True)
    (root / TOY / "toy.inter").write_text(toy_inter())
    (root / TOY / "toy.item").write_text("item_id:token\n" + "".join(f"i{k}\n" for k in range(10)))


SPLIT_ARGS = {"--dir": "{root}/" + TOY, "--name": "toy", "--mode": "cold"}
TOY_INTER, TOY_ITEM = TOY + "toy.inter", TOY + "toy.item"

SPLIT_CASES = [
    Case(".inter empty", write(TOY_INTER, b""), ("toy.inter", "empty")),
    Case(".inter header only", write(TOY_INTER, INTER_HEADER), ("toy.inter", "no interactions")),
    Case(".inter Latin-1", write(TOY_INTER, toy_inter("Ren\xe9\ti1").encode("latin-1")),
         ("toy.inter", "line 14", "UTF-8")),
    Case(".inter header without item_id", write(TOY_INTER, "user_id:token\titem:token\na\ti1\n"),
         ("toy.inter", "item_id")),
    Case(".inter a line with one field", write(TOY_INTER, toy_inter("a")), ("toy.inter", "[14]")),
    Case(".inter a line with an empty item", write(TOY_INTER, toy_inter("a\t ")), ("toy.inter", "[14]")),
    Case("a user with one interaction", write(TOY_INTER, toy_inter("z\ti1")), ("single interaction", "--kcore"),
         args={"--mode": "official"}),
    Case(".item empty", write(TOY_ITEM, b""), ("toy.item", "empty")),
    Case(".item header only", write(TOY_ITEM, "item_id:token\n"), ("toy.item", "no items")),
    Case(".item an item twice", append(TOY_ITEM, "i3\n"), ("toy.item", "line 12", "twice")),
    Case(".item without item_id", write(TOY_ITEM, "id:token\ni1\n"), ("toy.item", "item_id")),
    Case(".item a line with two fields", append(TOY_ITEM, "i10\textra\n"), ("toy.item", "line 12")),
    Case("a folder where a split file goes", folder_at(TOY + "toy.train.inter"), ("toy.train.inter", "folder")),
    Case(".inter a folder", folder_at(TOY_INTER), ("toy.inter", "folder")),
    Case("--dir missing", args={"--dir": "{root}/nowhere"}, names=("nowhere",)),
    unreadable_case(TOY_ITEM, ("toy.item",)),
    Case("--prefix with a slash", args={"--prefix": "../x-"}, names=("--prefix",)),
    Case("--name with a slash", args={"--name": "../toy"}, names=("--name",)),
    Case("--seed negative", args={"--seed": -1}, names=("--seed",)),
    Case("--seed a word", args={"--seed": "x"}, names=("--seed",)),
    Case("--mode unknown", args={"--mode": "random"}, names=("--mode",)),
]


# ---------------------------------------------------------------- text_features

TITLES = "item_id:token\ttitle:token_seq\n" + "".join(f"i{k}\tThing {k}\n" for k in range(4))


def build_text(root):
    (root / TOY).mkdir(parents=True)
    (root / TOY_ITEM).write_text(TITLES)


TEXT_ARGS = {"--item-file": "{root}/" + TOY_ITEM, "--name": "toy", "--out": "{root}/" + TOY, "--fields": "title"}

TEXT_CASES = [
    Case("item file empty", write(TOY_ITEM, b""), ("toy.item", "empty")),
    Case("item file header only", write(TOY_ITEM, "item_id:token\ttitle:token_seq\n"), ("toy.item", "no item")),
    Case("item file Latin-1", write(TOY_ITEM, (TITLES + "i9\tCaf\xe9\n").encode("latin-1")),
         ("toy.item", "line 6", "UTF-8")),
    Case("item file without the field", args={"--fields": "colour"}, names=("toy.item", "colour")),
    Case("item file without the id column", args={"--id-field": "asin"}, names=("toy.item", "asin")),
    Case("a line with too many fields", append(TOY_ITEM, "i9\tx\ty\n"), ("toy.item", "line 6")),
    Case("an item twice", append(TOY_ITEM, "i1\tagain\n"), ("toy.item", "line 6", "twice")),
    Case("--fields empty", args={"--fields": ","}, names=("--fields",)),
    Case("--batch-size 0", args={"--batch-size": 0}, names=("--batch-size",)),
    Case("--name with a slash", args={"--name": "../toy"}, names=("--name",)),
    Case("a folder where the features go", folder_at(TOY + "toy.textual.npy"), ("toy.textual.npy", "folder")),
    Case("--out a file", args={"--out": "{root}/" + TOY_ITEM}, names=("toy.item",)),
    Case("item file a folder", folder_at(TOY + "other.item"), ("other.item", "folder"),
         args={"--item-file": "{root}/" + TOY + "other.item"}),
    unreadable_case(TOY_ITEM, ("toy.item",)),
]


# ---------------------------------------------------------------- the tables, run

IMPORTERS = {
    "import_mmrec": (import_mmrec.main, build_mmrec, MMREC_ARGS, MMREC_CASES),
    "import_official": (import_official.main, build_official, OFFICIAL_ARGS, OFFICIAL_CASES),
    "import_pickled": (import_pickled.main, build_pickled, PICKLED_ARGS, PICKLED_CASES),
    "amazon_raw": (amazon_raw.main, build_amazon, AMAZON_ARGS, AMAZON_CASES),
    "scientific": (scientific.main, build_scientific, SCI_ARGS, SCIENTIFIC_CASES),
    "split": (split.main, build_split, SPLIT_ARGS, SPLIT_CASES),
    "text_features": (text_features.main, build_text, TEXT_ARGS, TEXT_CASES),
}
NON_ROOT = pytest.mark.skipif(AS_ROOT, reason="root reads a chmod 000 file anyway")
TABLE = [pytest.param(name, case, id=f"{name}: {case.id}", marks=[NON_ROOT] if case.needs_non_root else [])
         for name, (*_, cases) in IMPORTERS.items() for case in cases]


def good_import(name, root, capsys):
    """Build the inputs of ``name`` and run it once, so the output folder holds a good import."""
    main, build, args, _ = IMPORTERS[name]
    build(root)
    code, _, err = run_main(main, command_line(args, {}, root), capsys)
    assert code == 0 and not err, err
    return main, args


def test_every_command_in_dataset_prep_has_a_table():
    modules = {p.stem for p in (REPO / "dataset_prep").glob("*.py")
               if "def main(" in p.read_text(encoding="utf-8")}
    assert modules == set(IMPORTERS)


@pytest.mark.parametrize("name, case", TABLE)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(name, case, tmp_path, capsys):
    main, args = good_import(name, tmp_path, capsys)
    case.mutate(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_main(main, command_line(args, case.args, tmp_path), capsys)
    assert code == 2, err
    assert_one_error_line(err, case.names)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "UNPICKLED").exists()


# ---------------------------------------------------------------- what is accepted, and how

def lines_of(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


def test_mmrec_huge_item_ids_without_features_are_the_ids_that_occur(tmp_path, capsys):
    build_mmrec(tmp_path)
    (tmp_path / INTER).write_text(mmrec_inter("1\t10000000001\t0"))
    argv = command_line(MMREC_ARGS, {"--no-features": True}, tmp_path)
    code, _, err = run_main(import_mmrec.main, argv, capsys)
    assert (code, err) == (0, "")
    assert lines_of(tmp_path / "data/toy/toy.item")[1:] == ["0", "1", "2", "3", "10000000001"]


def test_official_huge_item_ids_without_features_are_the_ids_that_occur(tmp_path, capsys):
    build_official(tmp_path)
    remove(ITEMS)(tmp_path)
    with_user("3", [10000000001])(tmp_path)
    (tmp_path / CORE / "user2id.json").write_text(json.dumps({**USER2ID, "A3": 3}))
    code, _, err = run_main(import_official.main, command_line(OFFICIAL_ARGS, {"--no-features": True}, tmp_path),
                            capsys)
    assert (code, err) == (0, "")
    assert lines_of(tmp_path / "data/baby/baby.item")[1:] == ["0", "1", "2", "3", "10000000001"]
    assert "A3\t10000000001" in lines_of(tmp_path / "data/baby/baby.train.inter")


def test_pickled_columns_far_beyond_the_items_without_features_are_the_columns_used(tmp_path, capsys):
    build_pickled(tmp_path)
    wide = [sp.csr_matrix(m, shape=(3, 10**10)) for m in split_matrices()]
    wide[0] = sp.csr_matrix((np.ones(3), ([0, 1, 2], [0, 1, 10**10 - 1])), shape=(3, 10**10))
    for name, matrix in zip(("trnMat.pkl", "valMat.pkl", "tstMat.pkl"), wide):
        (tmp_path / "src" / name).write_bytes(pickle.dumps(matrix))
    code, _, err = run_main(import_pickled.main, command_line(PICKLED_ARGS, {"--no-features": True}, tmp_path), capsys)
    assert (code, err) == (0, "")
    assert lines_of(tmp_path / "data/pk/pk.item")[1:] == ["0", "1", "2", "3", str(10**10 - 1)]


@pytest.mark.parametrize("name, mutate, output, pair", [
    ("import_mmrec", append(INTER, "0\t1\t0\n"), "data/toy/toy.train.inter", "0\t1"),
    ("import_official", with_user("0", [0, 1, 1, 0]), "data/baby/baby.train.inter", "A0\tB1"),
    ("amazon_raw", write_gz(REVIEWS, review_lines(json.dumps(GOOD_REVIEWS[0]))), "data/baby/baby.inter", "U0\tB000000000"),
])
def test_duplicate_interactions_are_collapsed_and_reported(name, mutate, output, pair, tmp_path, capsys):
    main, args = good_import(name, tmp_path, capsys)
    mutate(tmp_path)
    code, out, err = run_main(main, command_line(args, {}, tmp_path), capsys)
    assert (code, err) == (0, "")
    assert "duplicate" in out
    assert sum(line.split("\t")[:2] == pair.split("\t") for line in lines_of(tmp_path / output)) == 1


def test_amazon_without_metadata_imports_items_with_empty_text_fields(tmp_path, capsys):
    build_amazon(tmp_path)
    write_gz(META, b"")(tmp_path)
    code, _, err = run_main(amazon_raw.main, command_line(AMAZON_ARGS, {"--no-text": True}, tmp_path), capsys)
    assert (code, err) == (0, "")
    assert lines_of(tmp_path / "data/baby/baby.item")[1] == "B000000000\t\t\t\t"


def test_a_reimport_replaces_the_folder_whole_and_names_what_is_gone(tmp_path, capsys):
    main, args = good_import("import_mmrec", tmp_path, capsys)
    (tmp_path / "data/toy/notes.txt").write_text("mine\n")
    (tmp_path / INTER).write_text(mmrec_inter(rows=MMREC_ROWS[:-1]))
    code, out, err = run_main(main, command_line(args, {}, tmp_path), capsys)
    assert (code, err) == (0, "")
    assert "notes.txt" in out and "gone" in out
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["toy"]  # no temporary folder left
    assert not (tmp_path / "data/toy/notes.txt").exists()
    assert "2\t2" not in lines_of(tmp_path / "data/toy/toy.test.inter")


def test_an_error_while_writing_leaves_the_old_folder_and_no_temporary_one(tmp_path, capsys, monkeypatch):
    main, args = good_import("import_mmrec", tmp_path, capsys)
    before = snapshot(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "toy.textual.npy")

    monkeypatch.setattr("dataset_prep.common.write_features", disk_full)
    code, _, err = run_main(main, command_line(args, {}, tmp_path), capsys)
    assert code == 2
    assert_one_error_line(err, ("toy.textual.npy", "No space left"))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("module, argv, names", [
    ("import_mmrec", ["--inter", "{root}/empty.inter", "--name", "toy", "--out", "{root}/data"],
     ("empty.inter", "empty")),
    ("split", ["--dir", "{root}"], ("--name", "--mode")),
])
def test_the_commands_themselves_print_one_line_and_exit_2(module, argv, names, tmp_path):
    (tmp_path / "empty.inter").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", f"dataset_prep.{module}", *[a.format(root=tmp_path) for a in argv]],
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.inter"]


def test_a_folder_in_the_way_is_refused_before_anything_moves(tmp_path, capsys):
    """The old folder stays whole: its feature file turned folder, and every other file, as they were."""
    main, args = good_import("import_mmrec", tmp_path, capsys)
    folder_at("data/toy/toy.visual.npy")(tmp_path)
    (tmp_path / INTER).write_text(mmrec_inter(rows=MMREC_ROWS[:-1]))
    before = snapshot(tmp_path / "data")
    code, _, err = run_main(main, command_line(args, {}, tmp_path), capsys)
    assert code == 2
    assert_one_error_line(err, ("toy.visual.npy", "move it away"))
    assert snapshot(tmp_path / "data") == before
    shutil.rmtree(tmp_path / "data/toy/toy.visual.npy")
    code, _, err = run_main(main, command_line(args, {}, tmp_path), capsys)
    assert (code, err) == (0, "")
    assert "2\t2" not in lines_of(tmp_path / "data/toy/toy.test.inter")

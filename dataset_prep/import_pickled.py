"""Import three pickled scipy sparse user x item matrices (train / valid / test) + features.

Input (the layout several published multimodal datasets use):
    trnMat.pkl, valMat.pkl, tstMat.pkl   scipy sparse matrices, users x items, one per split
    <modality>.npy                       rows indexed by item column (--modality NAME=PATH)

Output in <out>/<name>/: as ``dataset_prep.import_official`` writes it, and <name>.yaml listing
the modalities. User and item tokens are the row and column numbers. Items with features and
no interaction (an all-zero column) stay items: cold start. With --no-features the items are
the columns that hold an interaction.

A pickle can carry code that runs when it is loaded. These files are read with an unpickler
that admits only the scipy.sparse matrix classes and the numpy pieces they are made of, and
refuses anything else with an error naming the file and what it held.

Checks: the three matrices and every feature file agree on their shapes; no (user, item) pair
is in two splits (refused, or kept in the first split only with --allow-overlap); values other
than 0 and 1 are reported (each counts as one interaction; stored zeros are left out, reported).

Example:
    python -m dataset_prep.import_pickled --folder data/tiktok --name tiktok --out dataset \\
        --modality visual=data/tiktok/image_feat.npy --modality acoustic=data/tiktok/audio_feat.npy \\
        --modality textual=data/tiktok/text_feat.npy
"""
import importlib
import io
import pickle
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dataset_prep.common import (
    SPLITS,
    PrepError,
    add_output_arguments,
    cli_parser,
    dataset_folder,
    modality_files,
    run_cli,
    write_prepared,
)
from dataset_prep.inputs import load_feature_rows, read_bytes

DEFAULT_FILES = {"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"}
SPARSE_CLASSES = {"csr_matrix", "csc_matrix", "coo_matrix", "dok_matrix", "lil_matrix",
                  "csr_array", "csc_array", "coo_array", "dok_array", "lil_array"}
# (module, name) pairs a pickled sparse matrix is made of, besides its class; numpy 1 and 2 spellings
NUMPY_PARTS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"),
    ("builtins", "dict"), ("__builtin__", "dict"), ("builtins", "object"), ("__builtin__", "object"),
}


class RefusedObject(pickle.UnpicklingError):
    """The pickle names a class or function outside the allow-list (it is never imported)."""


class SparseOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds scipy sparse matrices and numpy arrays, and nothing else."""

    def find_class(self, module, name):
        if module.startswith("scipy.sparse") and name in SPARSE_CLASSES:
            return getattr(sp, name)
        if (module, name) in NUMPY_PARTS or (module == "numpy.dtypes" and name.endswith("DType")):
            return _import_numpy_part(module, name)
        raise RefusedObject(f"{module}.{name}")


def _import_numpy_part(module, name):
    module = {"copy_reg": "copyreg", "__builtin__": "builtins"}.get(module, module)
    for candidate in (module, module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise RefusedObject(f"{module}.{name}")


def load_sparse_pickle(path):
    """The scipy sparse matrix pickled in ``path``, loaded without running any code it may carry."""
    path = Path(path)
    data = read_bytes(path, ": pass --folder (the folder holding trnMat.pkl, valMat.pkl, tstMat.pkl) or the file.")
    try:
        matrix = SparseOnlyUnpickler(io.BytesIO(data)).load()
    except RefusedObject as err:
        raise PrepError(
            f"{path} holds {err}, which is not a scipy sparse matrix or a numpy array: refused without "
            "loading it (a pickle can run code when loaded). Is it the split matrix of this dataset?"
        ) from None
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file gets one clear message
        raise PrepError(f"{path} is not a readable pickle ({type(err).__name__}: {err}).") from None
    if not sp.issparse(matrix):
        raise PrepError(f"{path} holds a {type(matrix).__name__}, not a scipy sparse user x item matrix.")
    try:
        matrix = sp.coo_matrix(matrix)
        matrix.check_format() if hasattr(matrix, "check_format") else None
    except Exception as err:  # noqa: BLE001 - inconsistent internals of a crafted or damaged matrix
        raise PrepError(f"{path} holds a damaged sparse matrix ({type(err).__name__}: {err}): export it "
                        "again.") from None
    if np.asarray(matrix.data).dtype.kind not in "biuf":
        raise PrepError(f"{path} holds values of dtype {matrix.data.dtype}, not numbers: store 1 per interaction.")
    return matrix


def split_pairs(matrices, files, allow_overlap, log):
    """{split: [(user, item)]} from the matrices, after the shape, overlap and value checks."""
    shapes = {split: m.shape for split, m in matrices.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{files[s]} {shapes[s]}" for s in SPLITS)
        raise PrepError(f"The split matrices disagree on their shape ({listed}): they must all be users x items.")
    pairs, owner = {}, {}
    for split in SPLITS:
        matrix = matrices[split]
        values = np.asarray(matrix.data)
        other = (values != 1) & (values != 0)
        if other.any():
            counts = dict(zip(*np.unique(values[other], return_counts=True)))
            shown = ", ".join(f"{v:g}: {n}" for v, n in list(counts.items())[:5])
            log(f"  {files[split]}: {int(other.sum())} stored entries are neither 0 nor 1 ({shown}); "
                "each counts as one interaction")
        if (values == 0).any():
            log(f"  {files[split]}: {int((values == 0).sum())} explicitly stored zeros are not interactions: left out")
        kept = values != 0
        pairs[split] = sorted(set(zip(matrix.row[kept].tolist(), matrix.col[kept].tolist())))
        for pair in pairs[split]:
            owner.setdefault(pair, split)
    overlaps = {split: sum(owner[p] != split for p in pairs[split]) for split in SPLITS}
    if any(overlaps.values()):
        listed = ", ".join(f"{n} of {files[s]}" for s, n in overlaps.items() if n)
        if not allow_overlap:
            raise PrepError(f"(user, item) pairs in two splits: {listed} are also in an earlier split. "
                            "A pair in train and test leaks the answer; fix the files, or pass --allow-overlap "
                            "to keep each pair in its first split only.")
        log(f"  --allow-overlap: {listed} were in an earlier split too; kept there only")
        pairs = {split: [p for p in pairs[split] if owner[p] == split] for split in SPLITS}
    return pairs


def import_pickled(name, out, train=None, valid=None, test=None, folder=None, modality=None, no_features=False,
                   allow_overlap=False, log=print):
    """Convert the three pickled matrices and the feature files; returns the dataset folder."""
    dataset_folder(out, name)  # a bad --name is refused before any reading
    folder = Path(folder) if folder else None
    given = {"train": train, "valid": valid, "test": test}
    files = {}
    for split in SPLITS:
        if given[split]:
            files[split] = Path(given[split])
        elif folder:
            files[split] = folder / DEFAULT_FILES[split]
        else:
            raise PrepError(f"Give --{split} (the {split} matrix), or --folder holding {DEFAULT_FILES[split]}.")
    matrices = {split: load_sparse_pickle(path) for split, path in files.items()}
    pairs = split_pairs(matrices, {s: p.name for s, p in files.items()}, allow_overlap, log)
    n_items = matrices["train"].shape[1]
    features = {}
    if not no_features:
        beside = folder or files["train"].parent
        features = {m: load_feature_rows(path, n_items, f"{m} features")
                    for m, path in modality_files(beside, modality).items()}
    used = sorted({i for split in SPLITS for _, i in pairs[split]})
    if not used:
        raise PrepError(f"{', '.join(p.name for p in files.values())} hold no interaction (every stored value is 0): "
                        "are they the split matrices of this dataset?")
    if no_features:  # the items are the columns with an interaction: no table is sized by the column count
        item_tokens = [str(i) for i in used]
    else:
        if n_items > len(used):
            log(f"  {n_items - len(used)} items have no interaction in any split: kept as items (cold start)")
        item_tokens = [str(i) for i in range(n_items)]
    splits = {split: [(str(u), str(i)) for u, i in pairs[split]] for split in SPLITS}
    return write_prepared(out, name, splits, item_tokens, features, log=log)


def main(argv=None):
    parser = cli_parser(__doc__, "import_pickled")
    parser.add_argument("--name", required=True, help="dataset name for RecBole")
    add_output_arguments(parser, beside="in the folder")
    parser.add_argument("--folder", help="folder holding trnMat.pkl, valMat.pkl, tstMat.pkl (and the features)")
    for split in SPLITS:
        parser.add_argument(f"--{split}", help=f"the {split} matrix (default: <folder>/{DEFAULT_FILES[split]})")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="keep a pair found in two splits in its first split only, instead of refusing")
    args = parser.parse_args(argv)
    return run_cli(import_pickled, args.name, args.out, args.train, args.valid, args.test, args.folder,
                   args.modality, args.no_features, args.allow_overlap)


if __name__ == "__main__":
    sys.exit(main())

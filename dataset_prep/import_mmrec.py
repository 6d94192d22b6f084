"""Import an MMRec data folder into RecBole benchmark files + features.

Input (MMRec's layout):
    <name>.inter        tab-separated ``userID itemID x_label``; x_label 0/1/2 = train/valid/test
    image_feat.npy, text_feat.npy   rows indexed by itemID (or any modalities: --modality NAME=PATH)

Output in <out>/<name>/: <name>.{train,valid,test}.inter, <name>.item and the features, as
``dataset_prep.import_official`` writes them, and <name>.yaml listing the modalities. The split is
kept exactly as given.

Example:
    python -m dataset_prep.import_mmrec --inter data/sports/sports.inter --name sports --out dataset
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from dataset_prep.common import (
    SPLITS,
    PrepError,
    add_feature_arguments,
    load_feature_rows,
    modality_files,
    report_malformed,
    run_cli,
    write_prepared,
)

LABELS = {"0": "train", "1": "valid", "2": "test"}


def parse_mmrec_inter(path, skip_malformed):
    """{split: [(user id, item id)]} from an MMRec .inter file, malformed lines reported by number."""
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path} not found.")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        missing = {"userID", "itemID", "x_label"} - set(header)
        if missing:
            raise PrepError(f"{path}: header {header} lacks {sorted(missing)}; expected 'userID<TAB>itemID<TAB>x_label'.")
        cols = [header.index(c) for c in ("userID", "itemID", "x_label")]
        splits, problems = {s: [] for s in SPLITS}, []
        for number, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split("\t")
            try:
                user, item, label = (fields[c] for c in cols)
                if label not in LABELS or not user.isdigit() or not item.isdigit():
                    raise ValueError
            except (IndexError, ValueError):
                problems.append(f"line {number}: {line.strip()[:60]!r}")
                continue
            splits[LABELS[label]].append((int(user), int(item)))
    report_malformed(problems, path, skip_malformed)
    return splits


def import_mmrec(inter, name, out, image_feat=None, text_feat=None, no_features=False, skip_malformed=False, log=print,
                 modality=None):
    raw = parse_mmrec_inter(inter, skip_malformed)
    n_items = max(i for pairs in raw.values() for _, i in pairs) + 1
    features = {}
    if not no_features:
        files = modality_files(Path(inter).parent, modality, image_feat, text_feat)
        first = next(iter(files.values()))
        if first.is_file():  # items with features but no interaction (cold start) count too
            n_items = max(n_items, np.load(first, mmap_mode="r").shape[0])
        features = {m: load_feature_rows(path, n_items, f"{m} features") for m, path in files.items()}
    item_tokens = [str(i) for i in range(n_items)]
    splits = {s: [(str(u), str(i)) for u, i in pairs] for s, pairs in raw.items()}
    return write_prepared(out, name, splits, item_tokens, features, log=log)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inter", required=True, help="MMRec's <name>.inter file")
    parser.add_argument("--name", required=True, help="dataset name for RecBole, e.g. sports")
    add_feature_arguments(parser, beside="beside the .inter")
    args = parser.parse_args(argv)
    return run_cli(import_mmrec, args.inter, args.name, args.out, args.image_feat, args.text_feat, args.no_features,
                   args.skip_malformed, modality=args.modality)


if __name__ == "__main__":
    sys.exit(main())

"""Import an MMRec data folder into RecBole benchmark files + features.

Input (MMRec's layout):
    <name>.inter        tab-separated ``userID itemID x_label``; x_label 0/1/2 = train/valid/test
    image_feat.npy, text_feat.npy   rows indexed by itemID (or any modalities: --modality NAME=PATH)

Output in <out>/<name>/: <name>.{train,valid,test}.inter, <name>.item and the features, as
``dataset_prep.import_official`` writes them, and <name>.yaml listing the modalities. The split is
kept exactly as given.

Item ids are the row numbers of the feature files: with features, every row is an item (those
without interactions are cold-start items) and an id beyond the rows is refused. With
--no-features the items are the ids that occur, whatever their size.

Example:
    python -m dataset_prep.import_mmrec --inter data/sports/sports.inter --name sports --out dataset
"""
import re
import sys
from pathlib import Path

from dataset_prep.common import (
    SPLITS,
    PrepError,
    add_feature_arguments,
    cli_parser,
    dataset_folder,
    modality_files,
    report_malformed,
    run_cli,
    write_prepared,
)
from dataset_prep.inputs import load_feature_rows, open_feature_matrix, read_header, read_lines

LABELS = {"0": "train", "1": "valid", "2": "test"}
HEADER = "userID\titemID\tx_label"
ID = re.compile(r"^[0-9]+$")


def parse_mmrec_inter(path, skip_malformed):
    """The interactions of an MMRec .inter file, malformed lines reported by number.

    Returns:
        tuple: ``({split: [(user id, item id)]}, (largest item id, its line number))``.
    """
    path = Path(path)
    lines = read_lines(path, ": pass --inter, MMRec's <name>.inter file.")
    header = read_header(lines, path, HEADER).split("\t")
    missing = {"userID", "itemID", "x_label"} - set(header)
    if missing:
        raise PrepError(f"{path}: header {header} lacks {sorted(missing)}; expected 'userID<TAB>itemID<TAB>x_label'.")
    cols = [header.index(c) for c in ("userID", "itemID", "x_label")]
    splits, problems, largest = {s: [] for s in SPLITS}, [], (-1, 0)
    for number, line in lines:
        fields = line.split("\t")
        try:
            user, item, label = (fields[c] for c in cols)
            if label not in LABELS or not ID.match(user) or not ID.match(item):
                raise ValueError
            user, item = int(user), int(item)  # a ValueError too beyond 4,300 digits
        except (IndexError, ValueError):
            problems.append(f"line {number}: {line.strip()[:60]!r}")
            continue
        splits[LABELS[label]].append((user, item))
        largest = max(largest, (item, -number))
    report_malformed(problems, path, skip_malformed)
    if not any(splits.values()):
        raise PrepError(f"{path} has no interactions after its header: expected one line per interaction, "
                        "'userID<TAB>itemID<TAB>x_label' with x_label 0, 1 or 2.")
    return splits, (largest[0], -largest[1])


def import_mmrec(inter, name, out, image_feat=None, text_feat=None, no_features=False, skip_malformed=False, log=print,
                 modality=None):
    dataset_folder(out, name)  # a bad --name is refused before any reading
    raw, (largest, line) = parse_mmrec_inter(inter, skip_malformed)
    features = {}
    if no_features:  # the items are the ids that occur: no table is sized by the largest id
        item_tokens = [str(i) for i in sorted({i for pairs in raw.values() for _, i in pairs})]
    else:
        files = modality_files(Path(inter).parent, modality, image_feat, text_feat)
        first = next(iter(files.values()))
        matrix = open_feature_matrix(first, f"{next(iter(files))} features")
        n_items = matrix.shape[0]  # items with features but no interaction (cold start) count too
        if largest >= n_items:
            raise PrepError(f"{first} has shape {matrix.shape}, but {inter} line {line} has item id {largest} "
                            "(row r must be item r): pass the feature files of this dataset, or fix the id "
                            "(--no-features imports ids of any size).")
        features = {m: load_feature_rows(path, n_items, f"{m} features") for m, path in files.items()}
        item_tokens = [str(i) for i in range(n_items)]
    splits = {s: [(str(u), str(i)) for u, i in pairs] for s, pairs in raw.items()}
    return write_prepared(out, name, splits, item_tokens, features, log=log)


def main(argv=None):
    parser = cli_parser(__doc__, "import_mmrec")
    parser.add_argument("--inter", required=True, help="MMRec's <name>.inter file")
    parser.add_argument("--name", required=True, help="dataset name for RecBole, e.g. sports")
    add_feature_arguments(parser, beside="beside the .inter")
    args = parser.parse_args(argv)
    return run_cli(import_mmrec, args.inter, args.name, args.out, args.image_feat, args.text_feat, args.no_features,
                   args.skip_malformed, modality=args.modality)


if __name__ == "__main__":
    sys.exit(main())

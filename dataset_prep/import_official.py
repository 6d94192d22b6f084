"""Import the official LATTICE/MICRO data folder into RecBole benchmark files + features.

Input (the official code's ``data/<dataset>/`` layout):
    <folder>/5-core/train.json, val.json, test.json   user id -> list of item ids
    <folder>/5-core/item2id.json, user2id.json         optional: ASIN / reviewer id -> id
    <folder>/image_feat.npy, text_feat.npy              rows indexed by item id (or --modality NAME=PATH)

Output in <out>/<name>/: <name>.{train,valid,test}.inter, <name>.item, <name>.visual.npy/.tokens,
<name>.textual.npy/.tokens (one pair per modality) and <name>.yaml. The split is kept exactly as given. Item tokens are ASINs when
item2id.json is there, else the integer ids.

Example:
    python -m dataset_prep.import_official --folder data/baby --name baby --out dataset
"""
import argparse
import sys
from pathlib import Path

from dataset_prep.common import (
    PrepError,
    add_feature_arguments,
    load_feature_rows,
    modality_files,
    read_json,
    report_malformed,
    run_cli,
    write_prepared,
)

SPLIT_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}


def interaction_dir(folder):
    folder = Path(folder)
    return folder / "5-core" if (folder / "5-core" / "train.json").is_file() else folder


def parse_split(path, skip_malformed):
    """{user id: [item ids]} from one official split file, with malformed entries reported."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise PrepError(f"{path} must hold a JSON object: user id -> list of item ids.")
    parsed, problems = {}, []
    for user, items in data.items():
        if not str(user).lstrip("-").isdigit():
            problems.append(f"user key {user!r} is not an integer id")
            continue
        if not isinstance(items, list) or not all(isinstance(i, int) and i >= 0 for i in items):
            problems.append(f"user {user}: {str(items)[:60]} is not a list of item ids")
            continue
        parsed[int(user)] = items
    report_malformed(problems, path, skip_malformed)
    return parsed


def inverse_map(path, what):
    """id -> token from an ``{token: id}`` JSON file, or None if the file is absent."""
    if not Path(path).is_file():
        return None
    mapping = read_json(path)
    inverse = {int(i): str(t) for t, i in mapping.items()}
    if len(inverse) != len(mapping):
        raise PrepError(f"{path} maps several {what}s to the same id.")
    return inverse


def import_official(folder, name, out, image_feat=None, text_feat=None, no_features=False, skip_malformed=False, log=print,
                    modality=None):
    src = interaction_dir(folder)
    raw = {split: parse_split(src / file, skip_malformed) for split, file in SPLIT_FILES.items()}
    item2token = inverse_map(src / "item2id.json", "item")
    user2token = inverse_map(src / "user2id.json", "user")
    max_item = max((i for split in raw.values() for items in split.values() for i in items), default=-1)
    n_items = len(item2token) if item2token else max_item + 1
    if max_item >= n_items:
        raise PrepError(f"Item id {max_item} in {src} is beyond the {n_items} items of {src / 'item2id.json'}.")
    if item2token and sorted(item2token) != list(range(n_items)):
        raise PrepError(f"{src / 'item2id.json'} must map to the ids 0..{n_items - 1} without gaps.")
    item_tokens = [item2token[i] if item2token else str(i) for i in range(n_items)]

    def user_token(u):
        if user2token is None:
            return str(u)
        if u not in user2token:
            raise PrepError(f"User id {u} of {src} is missing from {src / 'user2id.json'}.")
        return user2token[u]

    splits = {
        split: [(user_token(u), item_tokens[i]) for u in sorted(users) for i in users[u]]
        for split, users in raw.items()
    }
    features = {}
    if not no_features:
        parent = src.parent if src.name == "5-core" else src
        features = {m: load_feature_rows(path, n_items, f"{m} features")
                    for m, path in modality_files(parent, modality, image_feat, text_feat).items()}
    return write_prepared(out, name, splits, item_tokens, features, log=log)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="the official data/<dataset> folder (or its 5-core/)")
    parser.add_argument("--name", required=True, help="dataset name for RecBole, e.g. baby")
    add_feature_arguments(parser, beside="beside 5-core/")
    args = parser.parse_args(argv)
    return run_cli(import_official, args.folder, args.name, args.out, args.image_feat, args.text_feat,
                   args.no_features, args.skip_malformed, modality=args.modality)


if __name__ == "__main__":
    sys.exit(main())

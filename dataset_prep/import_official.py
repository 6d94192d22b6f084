"""Import the official LATTICE/MICRO data folder into RecBole benchmark files + features.

Input (the official code's ``data/<dataset>/`` layout):
    <folder>/5-core/train.json, val.json, test.json   user id -> list of item ids
    <folder>/5-core/item2id.json, user2id.json         optional: ASIN / reviewer id -> id
    <folder>/image_feat.npy, text_feat.npy              rows indexed by item id (or --modality NAME=PATH)

Output in <out>/<name>/: <name>.{train,valid,test}.inter, <name>.item, <name>.visual.npy/.tokens,
<name>.textual.npy/.tokens (one pair per modality) and <name>.yaml. The split is kept exactly as given. Item tokens are ASINs when
item2id.json is there, else the integer ids: with features, every row is an item (row r is
item id r); without features or item2id.json, the items are the ids that occur, whatever their size.

Example:
    python -m dataset_prep.import_official --folder data/baby --name baby --out dataset
"""
import re
import sys
from pathlib import Path

from dataset_prep.common import (
    PrepError,
    add_feature_arguments,
    cli_parser,
    dataset_folder,
    is_field,
    modality_files,
    report_malformed,
    run_cli,
    write_prepared,
)
from dataset_prep.inputs import json_type, load_feature_rows, open_feature_matrix, read_json

SPLIT_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}
USER_KEY = re.compile(r"^-?[0-9]+$")


def is_id(value):
    """A JSON integer id: an int that is not a bool, 0 or more."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def interaction_dir(folder):
    """The folder holding the split files: ``<folder>/5-core`` when it has train.json, else ``folder``."""
    folder = Path(folder)
    return folder / "5-core" if (folder / "5-core" / "train.json").exists() else folder


def parse_split(path, skip_malformed):
    """{user id: [item ids]} from one official split file, with malformed entries reported."""
    data = read_json(path, ": pass --folder, the official data/<dataset> folder (or its 5-core/).")
    if not isinstance(data, dict):
        raise PrepError(f"{path} holds a JSON {json_type(data)}; it must hold an object: user id -> list of "
                        "item ids, e.g. {\"0\": [3, 1]}.")
    parsed, problems = {}, []
    for user, items in data.items():
        if not USER_KEY.match(user) or len(user) > 1000:
            problems.append(f"user key {user[:60]!r} is not an integer id")
            continue
        if not isinstance(items, list) or not all(is_id(i) for i in items):
            problems.append(f"user {user}: {str(items)[:60]} is not a list of item ids")
            continue
        if int(user) in parsed:
            problems.append(f"user key {user!r} is user {int(user)} again")
            continue
        parsed[int(user)] = items
    report_malformed(problems, path, skip_malformed)
    return parsed


def inverse_map(path, what):
    """id -> token from an ``{token: id}`` JSON file, or None if the file is absent."""
    if not Path(path).exists():
        return None
    mapping = read_json(path, f": {Path(path).name} is optional; move the folder away, or put the official file "
                              "there.")
    example = f'{{"{"B00000IZQI" if what == "item" else "A1B2C3"}": 0}}'
    if not isinstance(mapping, dict):
        raise PrepError(f"{path} holds a JSON {json_type(mapping)}; it must hold an object mapping each {what} "
                        f"token to its integer id, e.g. {example}.")
    for token, i in mapping.items():
        if not is_id(i) or not is_field(token):
            raise PrepError(f"{path} maps {token[:60]!r} to {str(i)[:60]!r}; it must map each {what} token (no tabs "
                            f"or line breaks) to an integer id 0 or more, e.g. {example}.")
    inverse = {i: t for t, i in mapping.items()}
    if len(inverse) != len(mapping):
        raise PrepError(f"{path} maps several {what}s to the same id: each id once.")
    return inverse


def largest_item(raw, src):
    """(largest item id, the file that has it) over the three splits; (-1, None) when there is none."""
    return max(((max(i), src / SPLIT_FILES[s]) for s, users in raw.items() for i in users.values() if i),
               default=(-1, None), key=lambda found: found[0])


def import_official(folder, name, out, image_feat=None, text_feat=None, no_features=False, skip_malformed=False, log=print,
                    modality=None):
    dataset_folder(out, name)  # a bad --name is refused before any reading
    src = interaction_dir(folder)
    raw = {split: parse_split(src / file, skip_malformed) for split, file in SPLIT_FILES.items()}
    if not any(items for users in raw.values() for items in users.values()):
        raise PrepError(f"{src} has no interactions in {', '.join(SPLIT_FILES.values())}: is it the official "
                        "data/<dataset> folder?")
    item2token = inverse_map(src / "item2id.json", "item")
    user2token = inverse_map(src / "user2id.json", "user")
    max_item, where = largest_item(raw, src)
    if item2token is not None:
        n_items = len(item2token)
        if max_item >= n_items:
            raise PrepError(f"Item id {max_item} in {where} is beyond the {n_items} items of {src / 'item2id.json'}: "
                            "are they from the same dataset?")
        if sorted(item2token) != list(range(n_items)):
            raise PrepError(f"{src / 'item2id.json'} must map to the ids 0..{n_items - 1} without gaps.")
        item_tokens = [item2token[i] for i in range(n_items)]
    elif no_features:  # the items are the ids that occur: no table is sized by the largest id
        item_tokens = [str(i) for i in sorted({i for users in raw.values() for items in users.values() for i in items})]
    else:
        item_tokens = None  # row r of the feature files is item id r: sized by them, below

    def user_token(u):
        if user2token is None:
            return str(u)
        if u not in user2token:
            raise PrepError(f"User id {u} of {src} is missing from {src / 'user2id.json'}.")
        return user2token[u]

    features = {}
    if not no_features:
        parent = src.parent if src.name == "5-core" else src
        files = modality_files(parent, modality, image_feat, text_feat)
        if item_tokens is None:
            first = next(iter(files.values()))
            shape = open_feature_matrix(first, f"{next(iter(files))} features").shape
            if max_item >= shape[0]:
                raise PrepError(f"{first} has shape {shape}, but {where} has item id {max_item} (row r must be "
                                "item r): pass the feature files of this dataset, or fix the id (--no-features "
                                "imports ids of any size).")
        n_items = len(item_tokens) if item_tokens is not None else max_item + 1
        features = {m: load_feature_rows(path, n_items, f"{m} features") for m, path in files.items()}
        if item_tokens is None:
            item_tokens = [str(i) for i in range(n_items)]
    by_id = item2token is not None or not no_features  # item_tokens[i] is the token of item id i

    splits = {
        split: [(user_token(u), item_tokens[i] if by_id else str(i)) for u in sorted(users) for i in users[u]]
        for split, users in raw.items()
    }
    return write_prepared(out, name, splits, item_tokens, features, log=log)


def main(argv=None):
    parser = cli_parser(__doc__, "import_official")
    parser.add_argument("--folder", required=True, help="the official data/<dataset> folder (or its 5-core/)")
    parser.add_argument("--name", required=True, help="dataset name for RecBole, e.g. baby")
    add_feature_arguments(parser, beside="beside 5-core/")
    args = parser.parse_args(argv)
    return run_cli(import_official, args.folder, args.name, args.out, args.image_feat, args.text_feat,
                   args.no_features, args.skip_malformed, modality=args.modality)


if __name__ == "__main__":
    sys.exit(main())

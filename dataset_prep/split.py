"""Split a dataset's interactions into RecBole benchmark files: the papers' warm-start or cold-start protocol.

Reads ``<dir>/<name>.inter`` (every interaction, in file order) and ``<dir>/<name>.item`` (every
item, for the cold-start draw) and writes ``<dir>/<name>.<prefix>train.inter``,
``<prefix>valid.inter`` and ``<prefix>test.inter``.

``--mode official`` (warm start) follows the official LATTICE/MICRO data script: with a numpy
RandomState seeded once, each user in order of first appearance draws
``choice(n_u, 2 if n_u < 10 else int(0.2 n_u), replace=False)`` positions of their
interactions (in file order); the first half of the draw is test, the rest validation, the
remainder train.

``--mode cold`` follows the official cold-start script (paper 4.1.3): ``choice(n_items,
int(0.2 n_items), replace=False)`` over the items in .item order; the first half are test items,
the rest validation items. Every interaction with those items leaves training; a user's
validation / test targets are their interactions with them. Users without any are not
evaluated (they have no rows). The cold items stay in .item, so they keep their features, are
ranked at evaluation and are in the item graphs.

Load the result with ``--benchmark_filename="['<prefix>train','<prefix>valid','<prefix>test']"``.
For RecBole's own ratio split instead, use ``--benchmark_filename=None`` (it reads <name>.inter).

Example:
    python -m dataset_prep.split --dir dataset/baby --name baby --mode cold --prefix cold-
"""
import re
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from dataset_prep.common import (
    SEED_RANGE,
    SPLITS,
    PrepError,
    adding_files,
    cli_parser,
    dataset_name,
    run_cli,
    whole_number,
    write_lines,
)
from dataset_prep.inputs import read_header, read_lines

HEADER = ["user_id:token", "item_id:token"]
PREFIX = re.compile(r"[\w.-]*")


def field_names(header_line):
    """The field names of a RecBole header line (``user_id:token`` -> ``user_id``)."""
    return [h.split(":")[0] for h in header_line.split("\t")]


def read_pairs(path):
    """(user, item) token pairs of a RecBole .inter file, in file order."""
    path = Path(path)
    lines = read_lines(path, ": the splitter needs every interaction in <name>.inter (an importer writes it).")
    first = read_header(lines, path, "\t".join(HEADER))
    header = field_names(first)
    if "user_id" not in header or "item_id" not in header:
        raise PrepError(f"{path}: the header must name user_id and item_id, got {first!r}.")
    u, i = header.index("user_id"), header.index("item_id")
    pairs, bad = [], []
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(header) or not fields[u].strip() or not fields[i].strip():
            bad.append(number)
            continue
        pairs.append((fields[u], fields[i]))
    if bad:
        raise PrepError(f"{path}: {len(bad)} malformed lines, e.g. line(s) {bad[:10]}; expected {len(header)} tab-separated fields.")
    if not pairs:
        raise PrepError(f"{path} has no interactions after its header: nothing to split. Import the dataset again.")
    return pairs


def official_warm_split(pairs, seed=123):
    """The official per-user random split. Returns {split: [(user, item)]}."""
    rng = np.random.RandomState(seed)
    by_user = OrderedDict()
    for user, item in pairs:
        by_user.setdefault(user, []).append(item)
    few = [user for user, items in by_user.items() if len(items) < 2]
    if few:
        raise PrepError(f"{len(few)} users have a single interaction (e.g. {few[:3]}): the official split holds "
                        "out 2 per user. Filter the interactions first (a k-core, e.g. --kcore 5 in amazon_raw).")
    splits = {s: [] for s in SPLITS}
    for user, items in by_user.items():
        n = len(items)
        held = rng.choice(n, 2 if n < 10 else int(n * 0.2), replace=False)
        test, valid = set(held[: len(held) // 2].tolist()), set(held[len(held) // 2:].tolist())
        splits["train"] += [(user, items[k]) for k in range(n) if k not in test and k not in valid]
        splits["valid"] += [(user, items[k]) for k in held[len(held) // 2:].tolist()]
        splits["test"] += [(user, items[k]) for k in held[: len(held) // 2].tolist()]
    return splits


def cold_start_split(pairs, item_tokens, seed=123):
    """The official cold-start split. Returns ({split: [(user, item)]}, test items, valid items)."""
    rng = np.random.RandomState(seed)
    drawn = rng.choice(len(item_tokens), int(0.2 * len(item_tokens)), replace=False).tolist()
    test_items = {item_tokens[k] for k in drawn[: len(drawn) // 2]}
    valid_items = {item_tokens[k] for k in drawn[len(drawn) // 2:]}
    splits = {
        "train": [p for p in pairs if p[1] not in test_items and p[1] not in valid_items],
        "valid": [p for p in pairs if p[1] in valid_items],
        "test": [p for p in pairs if p[1] in test_items],
    }
    return splits, test_items, valid_items


def read_item_tokens(path):
    """Every item token of a RecBole .item file, in file order; each once."""
    path = Path(path)
    lines = read_lines(path, ": the cold-start split draws from every item listed there (an importer writes it).")
    first = read_header(lines, path, "item_id:token")
    header = field_names(first)
    if "item_id" not in header:
        raise PrepError(f"{path}: the header must name item_id, got {first!r}.")
    column = header.index("item_id")
    tokens, seen = [], set()
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(header) or not fields[column].strip():
            raise PrepError(f"{path} line {number}: {line[:60]!r} is not {len(header)} tab-separated fields with an "
                            "item_id.")
        if fields[column] in seen:
            raise PrepError(f"{path} line {number}: item {fields[column][:60]!r} is listed twice; each item once.")
        seen.add(fields[column])
        tokens.append(fields[column])
    if not tokens:
        raise PrepError(f"{path} has no items after its header: the cold-start split draws from them. Import the "
                        "dataset again.")
    return tokens


def check_prefix(prefix):
    """``prefix`` once it can start a file name: letters, digits, '.', '-' and '_' only."""
    if not PREFIX.fullmatch(prefix):
        raise PrepError(f"--prefix {prefix!r}: use letters, digits, '.', '-' or '_' (it starts the split files' "
                        "suffixes, e.g. 'cold-').")
    return prefix


def split_dataset(directory, name, mode, prefix="", seed=123, log=print):
    """Split ``<directory>/<name>.inter`` and write the three split files together; the splits."""
    directory = Path(directory)
    name, prefix = dataset_name(name), check_prefix(prefix)
    pairs = read_pairs(directory / f"{name}.inter")
    if mode == "official":
        splits = official_warm_split(pairs, seed)
    elif mode == "cold":
        splits, test_items, valid_items = cold_start_split(pairs, read_item_tokens(directory / f"{name}.item"), seed)
        log(f"  cold items: {len(test_items)} test, {len(valid_items)} validation (kept in {name}.item)")
    else:
        raise PrepError(f"--mode is {mode!r}; use 'official' or 'cold'.")
    with adding_files(directory) as staging:
        for split in SPLITS:
            write_lines(staging / f"{name}.{prefix}{split}.inter", HEADER, splits[split])
    users = {s: len({u for u, _ in splits[s]}) for s in SPLITS}
    log(f"Split '{name}' ({mode}, seed {seed}): " + ", ".join(f"{s} {len(splits[s])} rows / {users[s]} users" for s in SPLITS))
    return splits


def main(argv=None):
    parser = cli_parser(__doc__, "split")
    parser.add_argument("--dir", required=True, help="the dataset folder, e.g. dataset/baby")
    parser.add_argument("--name", required=True, help="the dataset name, e.g. baby")
    parser.add_argument("--mode", choices=["official", "cold"], required=True, help="warm-start (official) or cold-start")
    parser.add_argument("--prefix", default="", help="prefix of the split suffixes, e.g. 'cold-' (default: none)")
    parser.add_argument("--seed", type=whole_number(*SEED_RANGE), default=123, help="numpy seed (official code: 123)")
    args = parser.parse_args(argv)
    return run_cli(split_dataset, args.dir, args.name, args.mode, args.prefix, args.seed)


if __name__ == "__main__":
    sys.exit(main())

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
import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from dataset_prep.common import SPLITS, PrepError, run_cli, write_lines

HEADER = ["user_id:token", "item_id:token"]


def read_pairs(path):
    """(user, item) token pairs of a RecBole .inter file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path} not found: the splitter needs every interaction in <name>.inter.")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    if "user_id" not in header or "item_id" not in header:
        raise PrepError(f"{path}: the header must name user_id and item_id, got {lines[0]!r}.")
    u, i = header.index("user_id"), header.index("item_id")
    pairs, bad = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header) or not fields[u] or not fields[i]:
            bad.append(number)
            continue
        pairs.append((fields[u], fields[i]))
    if bad:
        raise PrepError(f"{path}: {len(bad)} malformed lines, e.g. line(s) {bad[:10]}; expected {len(header)} tab-separated fields.")
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
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path} not found: the cold-start split draws from every item listed there.")
    lines = path.read_text(encoding="utf-8").splitlines()
    column = [h.split(":")[0] for h in lines[0].split("\t")].index("item_id")
    return [line.split("\t")[column] for line in lines[1:]]


def split_dataset(directory, name, mode, prefix="", seed=123, log=print):
    directory = Path(directory)
    pairs = read_pairs(directory / f"{name}.inter")
    if mode == "official":
        splits = official_warm_split(pairs, seed)
    elif mode == "cold":
        splits, test_items, valid_items = cold_start_split(pairs, read_item_tokens(directory / f"{name}.item"), seed)
        log(f"  cold items: {len(test_items)} test, {len(valid_items)} validation (kept in {name}.item)")
    else:
        raise PrepError(f"--mode is {mode!r}; use 'official' or 'cold'.")
    for split in SPLITS:
        write_lines(directory / f"{name}.{prefix}{split}.inter", HEADER, splits[split])
    users = {s: len({u for u, _ in splits[s]}) for s in SPLITS}
    log(f"Split '{name}' ({mode}, seed {seed}): " + ", ".join(f"{s} {len(splits[s])} rows / {users[s]} users" for s in SPLITS))
    return splits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="the dataset folder, e.g. dataset/baby")
    parser.add_argument("--name", required=True, help="the dataset name, e.g. baby")
    parser.add_argument("--mode", choices=["official", "cold"], required=True, help="warm-start (official) or cold-start")
    parser.add_argument("--prefix", default="", help="prefix of the split suffixes, e.g. 'cold-' (default: none)")
    parser.add_argument("--seed", type=int, default=123, help="numpy seed (official code: 123)")
    args = parser.parse_args(argv)
    return run_cli(split_dataset, args.dir, args.name, args.mode, args.prefix, args.seed)


if __name__ == "__main__":
    sys.exit(main())

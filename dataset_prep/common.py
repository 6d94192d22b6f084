"""Writing a prepared dataset: benchmark .inter files, .item, aligned features, a summary.

Every file is written atomically (temp file, then rename) and deterministically, so a re-run on
the same inputs gives byte-identical outputs.
"""
import json
import re
from pathlib import Path

import numpy as np

from recbole_micro.files import write_atomically, write_feature_files

SPLITS = ("train", "valid", "test")


class PrepError(Exception):
    """Bad input to a converter: the message names the file and the fix."""


def write_lines(path, header, rows):
    """Write ``header`` and tab-separated ``rows`` atomically."""
    text = "\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_benchmark(out_dir, name, splits, item_tokens, item_fields=None):
    """Write ``<name>.{train,valid,test}.inter``, ``<name>.inter`` (all of them) and ``<name>.item``.

    Args:
        splits (dict): split name -> list of (user token, item token).
        item_tokens (list): every item, those without interactions included (cold start).
        item_fields (dict): optional ``{field:type: [value per item]}`` for the .item file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_lines(out_dir / f"{name}.{split}.inter", ["user_id:token", "item_id:token"], splits[split])
    # all interactions too, for RecBole's own ratio split or dataset_prep.split
    write_lines(out_dir / f"{name}.inter", ["user_id:token", "item_id:token"], [p for s in SPLITS for p in splits[s]])
    fields = item_fields or {}
    header = ["item_id:token"] + list(fields)
    rows = [[t] + [fields[f][i] for f in fields] for i, t in enumerate(item_tokens)]
    write_lines(out_dir / f"{name}.item", header, rows)


def load_feature_rows(path, n_rows, what):
    """Open a feature matrix whose row r belongs to item id r, checking its shape."""
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{what} not found: {path}. Pass its location, or --no-features to import interactions only.")
    matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise PrepError(
            f"{path} has shape {matrix.shape}, but the interactions use {n_rows} item ids: row r must be "
            f"item r. Is it the feature file of this dataset?"
        )
    if not np.isfinite(matrix).all():
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        raise PrepError(f"{path} has NaN or infinite values in rows {bad[:10].tolist()}; fix them before importing.")
    return matrix


def write_features(out_dir, name, modality, matrix, item_tokens):
    """Write ``<name>.<modality>.npy`` (float32) and its token list, row r = ``item_tokens[r]``."""
    out_dir = Path(out_dir)
    return write_feature_files(out_dir / f"{name}.{modality}.npy", out_dir / f"{name}.{modality}.tokens", item_tokens, matrix)


def collapse_duplicates(splits):
    """Drop repeated (user, item) pairs, keeping the first in train, valid, test order.

    Returns:
        tuple: ``(splits without duplicates, number dropped per split)``.
    """
    seen, clean, dropped = set(), {}, {}
    for split in SPLITS:
        kept = []
        for pair in splits[split]:
            if pair in seen:
                continue
            seen.add(pair)
            kept.append(pair)
        clean[split], dropped[split] = kept, len(splits[split]) - len(kept)
    return clean, dropped


def summary(name, out_dir, splits, n_items, feature_shapes):
    """A one-screen summary of what was written."""
    users = {u for split in SPLITS for u, _ in splits[split]}
    lines = [f"Prepared '{name}' in {out_dir}", f"  users: {len(users)}, items: {n_items}"]
    lines.append("  interactions: " + ", ".join(f"{s} {len(splits[s])}" for s in SPLITS))
    for modality, shape in feature_shapes.items():
        lines.append(f"  {modality} features: {shape[0]} x {shape[1]}")
    return "\n".join(lines)


def read_json(path):
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path} not found.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise PrepError(f"{path} is not valid JSON: {err}") from err


MODALITY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_MODALITY_FILES = {"visual": "image_feat.npy", "textual": "text_feat.npy"}  # the papers' published pair


def parse_modality_args(specs):
    """{name: Path} from ``--modality NAME=PATH`` arguments, in the order given."""
    modalities = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not path.strip():
            raise PrepError(f"--modality {spec!r}: write NAME=PATH, e.g. --modality audio=data/audio_feat.npy.")
        if not MODALITY_NAME.match(name):
            raise PrepError(f"--modality {spec!r}: the name must be a letter, then letters, digits or '_'.")
        if name in modalities:
            raise PrepError(f"--modality {name} is given twice.")
        modalities[name] = Path(path.strip())
    return modalities


def modality_files(folder, modality=None, image_feat=None, text_feat=None):
    """Which feature file each modality is read from: ``--modality`` when given, else the papers'
    pair (``--image-feat``/``--text-feat``, by default ``image_feat.npy``/``text_feat.npy`` in ``folder``)."""
    chosen = parse_modality_args(modality)
    if chosen:
        if image_feat or text_feat:
            raise PrepError("Give the features either as --modality NAME=PATH or as --image-feat/--text-feat, not both.")
        return chosen
    folder = Path(folder)
    return {"visual": Path(image_feat or folder / DEFAULT_MODALITY_FILES["visual"]),
            "textual": Path(text_feat or folder / DEFAULT_MODALITY_FILES["textual"])}


def dataset_yaml(name, modalities, benchmark=True, missing=None):
    """The dataset YAML that lets ``run_recbole_micro.py -d <name>`` run with nothing written by hand.

    Args:
        modalities (list): the modality names, each with ``<name>.<modality>.npy/.tokens``.
        benchmark (bool): the split is in ``<name>.{train,valid,test}.inter`` (else RecBole splits ``<name>.inter``).
        missing (str): the policy for items without a feature row (None: every item has one).
    """
    lines = [
        f"# Written by dataset_prep for '{name}'; run_recbole_micro.py reads it from this folder",
        "# (above properties/dataset/, below your config files). Edit freely: a re-import rewrites it.",
        "USER_ID_FIELD: user_id",
        "ITEM_ID_FIELD: item_id",
        "load_col:",
        "  inter: [user_id, item_id]",
        "  item: [item_id]",
    ]
    if benchmark:
        lines += ["benchmark_filename: [train, valid, test]  # the split as prepared",
                  "eval_args:", "  group_by: user", "  order: RO", "  mode: full"]
    if modalities:
        lines.append("modalities:")
        for modality in modalities:
            lines += [f"  {modality}:", f"    file: {name}.{modality}.npy", f"    tokens: {name}.{modality}.tokens"]
            if missing:
                lines.append(f"    missing: {missing}  # items without a row (the converter reports how many)")
    else:
        lines.append("# modalities: imported without features (RecBole's models run; ours need a modality)")
    return "\n".join(lines) + "\n"


def write_dataset_yaml(out_dir, name, modalities, benchmark=True, missing=None):
    """Write ``<out_dir>/<name>.yaml`` (:func:`dataset_yaml`) atomically; its path."""
    path = Path(out_dir) / f"{name}.yaml"
    text = dataset_yaml(name, modalities, benchmark, missing)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def write_prepared(out_root, name, splits, item_tokens, features, log=print):
    """Collapse duplicate pairs (reported), then write the benchmark files and features.

    Args:
        out_root (str or Path): the ``data_path``; files go to ``<out_root>/<name>/``.
        splits (dict): split -> list of (user token, item token).
        item_tokens (list): all items in feature-row order.
        features (dict): modality -> (n_items, dim) matrix whose row r is ``item_tokens[r]``.

    Returns:
        Path: the dataset folder.
    """
    out_dir = Path(out_root) / name
    splits, dropped = collapse_duplicates(splits)
    for split, count in dropped.items():
        if count:
            log(f"  {count} duplicate (user, item) pairs in {split} collapsed (kept the first occurrence).")
    write_benchmark(out_dir, name, splits, item_tokens)
    shapes = {m: write_features(out_dir, name, m, matrix, item_tokens) for m, matrix in features.items()}
    yaml_file = write_dataset_yaml(out_dir, name, list(features))
    log(summary(name, out_dir, splits, len(item_tokens), shapes))
    log(f"  settings: {yaml_file} (run: python run_recbole_micro.py -d {name} --data_path={Path(out_root)})")
    return out_dir


def report_malformed(problems, source, skip):
    """Raise on malformed input unless ``skip``; in both cases say where it is."""
    if not problems:
        return
    listed = "; ".join(problems[:10]) + (f"; ... ({len(problems) - 10} more)" if len(problems) > 10 else "")
    message = f"{len(problems)} malformed entries in {source}: {listed}"
    if not skip:
        raise PrepError(message + ". Fix them, or pass --skip-malformed to leave them out (they are then counted here).")
    print(f"  skipped {message}")


def add_output_arguments(parser, beside):
    """The options of every importer: output folder, modalities, interactions only."""
    parser.add_argument("--out", default="dataset", help="data_path to write <name>/ into (default: dataset)")
    parser.add_argument("--modality", action="append", metavar="NAME=PATH",
                        help="a modality's .npy features, rows indexed by the source's item id (repeatable; "
                             f"default: visual=image_feat.npy and textual=text_feat.npy {beside})")
    parser.add_argument("--no-features", action="store_true", help="import the interactions only")


def add_feature_arguments(parser, beside):
    """The options the text-format importers share: :func:`add_output_arguments`, the papers'
    two feature files by name, malformed lines."""
    add_output_arguments(parser, beside)
    parser.add_argument("--image-feat", help=f"visual features (default: image_feat.npy {beside})")
    parser.add_argument("--text-feat", help=f"text features (default: text_feat.npy {beside})")
    parser.add_argument("--skip-malformed", action="store_true", help="leave malformed entries out (reported)")


def run_cli(action, *args, **kwargs):
    """Run a converter for a command line: a PrepError becomes one message and exit code 2."""
    import sys

    try:
        action(*args, **kwargs)
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

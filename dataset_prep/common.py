"""Writing a prepared dataset: benchmark .inter files, .item, aligned features, a summary.

A dataset folder is written whole: into a temporary folder beside it, which then replaces it
(:func:`replacing_folder`), so an error leaves the old folder exactly as it was. Files added to an
existing folder (a split, a text modality) are written together the same way
(:func:`adding_files`). Every file is written deterministically, so a re-run on the same inputs
gives byte-identical outputs.
"""
import argparse
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from recbole_micro.errors import RecBoleMicroError
from recbole_micro.files import write_atomically, write_feature_files

SPLITS = ("train", "valid", "test")
DATASET_NAME = re.compile(r"^\w[\w.-]*$")


class PrepError(Exception):
    """Bad input to a converter: the message names the file and the fix."""


def dataset_name(name):
    """``name`` once it is known to be one folder name: never a path, never ``.`` or ``..``."""
    if not DATASET_NAME.fullmatch(str(name)):
        raise PrepError(f"--name {name!r}: a dataset name is a letter or digit, then letters, digits, '.', '-' "
                        "or '_' (it names the folder <out>/<name>/ and its files).")
    return str(name)


def dataset_folder(out_root, name):
    """``<out_root>/<name>``, once ``name`` is known to be one folder name (never ``out_root`` itself)."""
    return Path(out_root) / dataset_name(name)


SEED_RANGE = (0, 2**32 - 1)  # what numpy.random.RandomState accepts


def whole_number(minimum, maximum=None):
    """An argparse ``type`` for a whole number from ``minimum`` to ``maximum`` (no upper bound when None)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"from {minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range: allowed {allowed}")
        return value

    return parse


def is_field(token):
    """Whether ``token`` can be one field of a tab-separated line: a non-empty string without tabs or line breaks."""
    return isinstance(token, str) and bool(token.strip()) and not any(c in token for c in "\t\r\n")


@contextmanager
def replacing_folder(target, log=print):
    """Write a folder whole: yield an empty folder beside ``target`` to write into.

    When the block ends without an error, the new folder replaces ``target`` (two renames; what
    the old folder held is gone, and the log lists the entries the new one does not have). On
    any error the new folder is removed and ``target`` is left untouched. A folder inside
    ``target`` where the new one has a file is refused, leaving everything as it was.
    """
    target = Path(target)
    if target.is_symlink():
        target = target.resolve()
    if target.exists() and not target.is_dir():
        raise PrepError(f"{target} is a file where the dataset folder goes: move it away, or pass another --out or "
                        "--name.")
    created = missing_folders(target.parent)
    staging = new_folder(target.with_name(f".{target.name}.tmp{os.getpid()}"), like=target)
    try:
        yield staging
        refuse_clashes(staging, target)
        swap_in(staging, target, log)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty(created)
        raise


@contextmanager
def adding_files(folder):
    """Write several files into ``folder`` together: yield an empty folder to write them into.

    When the block ends without an error, each file written there is renamed into ``folder``,
    replacing a file of the same name; on any error none is, and ``folder`` is left untouched.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PrepError(f"{folder} is a file, not a folder to write into: pass the dataset folder.")
    created = missing_folders(folder)
    staging = new_folder(folder / f".tmp{os.getpid()}")
    try:
        yield staging
        refuse_clashes(staging, folder)
        for path in sorted(staging.iterdir()):
            os.replace(path, folder / path.name)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty(created)
        raise


def missing_folders(folder):
    """The folders from ``folder`` up that do not exist yet, deepest first."""
    folder = Path(folder)
    return [f for f in (folder, *folder.parents) if not f.exists()]


def remove_empty(folders):
    """Remove ``folders`` (deepest first) as long as they are empty: undo :func:`missing_folders`' creations."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def new_folder(path, like=None):
    """Create the empty folder ``path`` (and its parents), with the permissions of ``like`` when it exists."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(path, ignore_errors=True)  # left behind by a run killed under this process id
        path.mkdir()
    except (FileExistsError, NotADirectoryError):
        blocking = next(p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir())
        raise PrepError(f"{blocking} is a file, not a folder: pass an --out folder (a new one is created).") from None
    except OSError as err:
        raise PrepError(f"Cannot create {err.filename or path} ({err.strerror}): pass an --out folder you can "
                        "write to.") from None
    if like is not None and Path(like).is_dir():
        shutil.copymode(like, path)
    return path


def refuse_clashes(staging, target):
    """A PrepError if ``target`` has a folder where ``staging`` has a file."""
    for path in sorted(staging.rglob("*")):
        there = Path(target) / path.relative_to(staging)
        if path.is_file() and there.is_dir():
            raise PrepError(f"{there} is a folder where the converter writes a file: move it away and run again "
                            "(nothing was changed).")


def swap_in(staging, target, log):
    """Rename ``staging`` onto ``target``; the old ``target`` is removed once the new one is in place."""
    if not target.exists():
        os.rename(staging, target)
        return
    gone = sorted(set(os.listdir(target)) - set(os.listdir(staging)))
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if gone:
        listed = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
        log(f"  {target} was replaced whole; the old folder's {listed} (not written by this converter) "
            "are gone: run what made them again if you need them.")


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
        Path: the dataset folder, written whole (:func:`replacing_folder`).
    """
    out_dir = dataset_folder(out_root, name)
    splits, dropped = collapse_duplicates(splits)
    for split, count in dropped.items():
        if count:
            log(f"  {count} duplicate (user, item) pairs in {split} collapsed (kept the first occurrence).")
    with replacing_folder(out_dir, log) as staging:
        write_benchmark(staging, name, splits, item_tokens)
        shapes = {m: write_features(staging, name, m, matrix, item_tokens) for m, matrix in features.items()}
        write_dataset_yaml(staging, name, list(features))
    log(summary(name, out_dir, splits, len(item_tokens), shapes))
    log(f"  settings: {out_dir / f'{name}.yaml'} (run: python run_recbole_micro.py -d {name} "
        f"--data_path={Path(out_root)})")
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


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit code 2, as the converters' own errors are."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def cli_parser(doc, module):
    """The argument parser of ``python -m dataset_prep.<module>``, its help the module docstring."""
    return OneLineParser(prog=f"python -m dataset_prep.{module}", description=doc,
                         formatter_class=argparse.RawDescriptionHelpFormatter)


def run_cli(action, *args, **kwargs):
    """Run a converter for a command line: a bad input becomes one line on stderr and exit code 2.

    PrepError and recbole-micro's own errors name the file and the fix; an OSError the converter
    did not foresee (a full disk, a permission) still names its file.
    """
    try:
        action(*args, **kwargs)
    except (PrepError, RecBoleMicroError) as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"{err.filename or 'a file'}: {err.strerror or err}. Check the path, its permissions and the "
                    "free space, then run again (an interrupted dataset folder is left as it was).")
    return 0


def fail(message):
    """Print ``message`` as one ``error:`` line on stderr; the exit code 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return 2

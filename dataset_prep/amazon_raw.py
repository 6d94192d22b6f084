"""Convert the raw Amazon 2014 files of any category into RecBole atomic files + features.

Inputs (from the Amazon 2014 review data release; any category):
    reviews_<Category>_5.json.gz    one JSON object per line (reviewerID, asin, overall, unixReviewTime)
    meta_<Category>.json.gz         one Python-literal dict per line (asin, title, description,
                                    categories, brand): parsed with ast.literal_eval, never eval
    image_features_<Category>.b     records of a 10-byte ASIN + 4096 little-endian float32,
                                    streamed (many GB), keeping only this dataset's items

Outputs in <out>/<name>/:
    <name>.inter                    user_id, item_id, rating, timestamp (file order)
    <name>.item                     item_id and the text fields (tabs and newlines become spaces)
    <name>.visual.npy/.tokens       the image features of the items that have one
    <name>.textual.npy/.tokens      text embeddings (title, description, categories, brand)
    <name>.{train,valid,test}.inter the split (--split official by default; see dataset_prep.split)

Items and users are sorted by token, so the output does not depend on set order and a re-run
gives byte-identical files. Malformed lines are reported with their line numbers (an error
unless --skip-malformed); duplicate (user, item) reviews are reported and collapsed.

Example:
    python -m dataset_prep.amazon_raw --reviews raw/reviews_Baby_5.json.gz --meta raw/meta_Baby.json.gz \\
        --images raw/image_features_Baby.b --name baby --out dataset
"""
import argparse
import ast
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from dataset_prep.common import PrepError, report_malformed, run_cli, write_dataset_yaml, write_features, write_lines
from dataset_prep.split import split_dataset

ASIN_BYTES = 10
IMAGE_DIM = 4096
TEXT_FIELDS = ("title", "description", "categories", "brand")


def open_text(path):
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path} not found.")
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_reviews(path, skip_malformed=False, log=print):
    """[(user, item, rating, time)] in file order, duplicates (user, item) collapsed."""
    reviews, problems, seen, duplicates = [], [], set(), 0
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                user, item = str(record["reviewerID"]), str(record["asin"])
                rating, time = float(record.get("overall", 1.0)), int(record.get("unixReviewTime", 0))
            except (ValueError, KeyError, TypeError) as err:
                problems.append(f"line {number} ({type(err).__name__}: {err})")
                continue
            if (user, item) in seen:
                duplicates += 1
                continue
            seen.add((user, item))
            reviews.append((user, item, rating, time))
    report_malformed(problems, path, skip_malformed)
    if duplicates:
        log(f"  {duplicates} duplicate (user, item) reviews in {path} collapsed (kept the first).")
    return reviews


def k_core(reviews, k, log=print):
    """Repeatedly drop users and items with fewer than k interactions; report what went."""
    if k <= 1:
        return reviews
    kept = reviews
    while True:
        users = Counter(r[0] for r in kept)
        items = Counter(r[1] for r in kept)
        filtered = [r for r in kept if users[r[0]] >= k and items[r[1]] >= k]
        if len(filtered) == len(kept):
            break
        kept = filtered
    gone_users = len({r[0] for r in reviews}) - len({r[0] for r in kept})
    gone_items = len({r[1] for r in reviews}) - len({r[1] for r in kept})
    log(f"  {k}-core filtering removed {len(reviews) - len(kept)} interactions, {gone_users} users, {gone_items} items.")
    return kept


def flatten_categories(categories):
    """Amazon's list of category paths as one de-duplicated, ordered string."""
    seen = []
    for path in categories or []:
        for name in path if isinstance(path, list) else [path]:
            if name not in seen:
                seen.append(name)
    return ", ".join(seen)


def clean(text):
    return " ".join(str(text).split())


def field_text(record, field):
    """One text field of a metadata record on one line (categories flattened)."""
    value = record.get(field, "")
    return clean(flatten_categories(value) if field == "categories" else value)


def read_meta(path, wanted, skip_malformed=False):
    """{asin: record} for the wanted items; each line a Python literal (ast.literal_eval)."""
    meta, problems = {}, []
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = ast.literal_eval(line)
                asin = str(record["asin"])
            except (ValueError, SyntaxError, KeyError, TypeError) as err:
                problems.append(f"line {number} ({type(err).__name__})")
                continue
            if asin in wanted:
                meta[asin] = record
    report_malformed(problems, path, skip_malformed)
    return meta


def item_text(record, official=False):
    """The text to embed for one item.

    Ours: title. description. categories. brand. With ``official``, the official script's
    string: ' ' + every category + ' ', then the title, the title again when there is a
    brand key (its bug: brand is never used), then the description, newlines as spaces.
    """
    if official:
        text = " "
        for path in record.get("categories", []):
            for name in path:
                text += name + " "
        if "title" in record:
            text += record["title"]
        if "brand" in record:
            text += record["title"]
        if "description" in record:
            text += record["description"]
        return text.replace("\n", " ")
    return ". ".join(t for t in (field_text(record, f) for f in TEXT_FIELDS) if t)


def read_image_features(path, wanted, dim=IMAGE_DIM):
    """Stream ``image_features_<Category>.b``, keeping the wanted ASINs.

    Returns:
        dict: asin -> (dim,) float32 vector.
    """
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path} not found.")
    record = ASIN_BYTES + 4 * dim
    size = path.stat().st_size
    if size % record:
        raise PrepError(
            f"{path} is {size} bytes, not a whole number of {record}-byte records (10-byte ASIN + {dim} float32): "
            f"it is truncated at byte {size - size % record}, or --image-dim is wrong."
        )
    found = {}
    with open(path, "rb") as f:
        while True:
            head = f.read(ASIN_BYTES)
            if not head:
                break
            body = f.read(4 * dim)
            asin = head.decode("ascii", errors="replace")
            if asin in wanted:
                found[asin] = np.frombuffer(body, dtype="<f4").copy()
    return found


def convert(reviews_path, meta_path, images_path, name, out, kcore=0, official_text=False, encoder=None,
            no_text=False, image_dim=IMAGE_DIM, split="official", seed=123, skip_malformed=False, log=print):
    """The whole conversion; returns the dataset folder."""
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    reviews = k_core(read_reviews(reviews_path, skip_malformed, log), kcore, log)
    if not reviews:
        raise PrepError(f"No interactions left in {reviews_path}" + (f" after {kcore}-core filtering." if kcore > 1 else "."))
    items = sorted({r[1] for r in reviews})
    wanted = set(items)
    write_lines(out_dir / f"{name}.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
                [(u, i, f"{r:g}", t) for u, i, r, t in reviews])

    meta = read_meta(meta_path, wanted, skip_malformed)
    fields = {f: [field_text(meta.get(i, {}), f) for i in items] for f in TEXT_FIELDS}
    write_lines(out_dir / f"{name}.item", ["item_id:token"] + [f"{f}:token_seq" for f in TEXT_FIELDS],
                [[i] + [fields[f][k] for f in TEXT_FIELDS] for k, i in enumerate(items)])
    log(f"  metadata for {len(meta)} of {len(items)} items")

    shapes = {}
    if images_path:
        images = read_image_features(images_path, wanted, image_dim)
        with_image = [i for i in items if i in images]
        if not with_image:
            raise PrepError(f"{images_path} has no record for any item of this dataset: is it the same category?")
        shapes["visual"] = write_features(out_dir, name, "visual", np.stack([images[i] for i in with_image]), with_image)
        log(f"  image features for {len(with_image)} of {len(items)} items (the rest follow the missing-feature policy)")
    if not no_text:
        from dataset_prep.text_features import write_text_features

        texts = {i: item_text(meta[i], official_text) for i in items if i in meta}
        with_text = [i for i in items if texts.get(i, "").strip()]
        shapes["textual"] = write_text_features(out_dir, name, with_text, [texts[i] for i in with_text], encoder)
    if split:
        split_dataset(out_dir, name, split, seed=seed, log=log)
    write_dataset_yaml(out_dir, name, list(shapes), benchmark=bool(split), missing="mean")
    users = len({r[0] for r in reviews})
    log(f"Prepared '{name}' in {out_dir}: {users} users, {len(items)} items, {len(reviews)} interactions")
    for modality, shape in shapes.items():
        log(f"  {modality} features: {shape[0]} x {shape[1]}")
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", required=True, help="reviews_<Category>_5.json.gz")
    parser.add_argument("--meta", required=True, help="meta_<Category>.json.gz")
    parser.add_argument("--images", help="image_features_<Category>.b (optional)")
    parser.add_argument("--name", required=True, help="dataset name, e.g. baby")
    parser.add_argument("--out", default="dataset", help="data_path to write <name>/ into (default: dataset)")
    parser.add_argument("--kcore", type=int, default=0, help="k-core filtering (0: off; the 5-core files are already 5-core)")
    parser.add_argument("--official-text", action="store_true", help="reproduce the official script's text exactly")
    parser.add_argument("--text-encoder", default=None, help="local sentence-transformers folder (default: offline MiniLM)")
    parser.add_argument("--no-text", action="store_true", help="skip the text features")
    parser.add_argument("--image-dim", type=int, default=IMAGE_DIM, help="floats per image record (default 4096)")
    parser.add_argument("--split", choices=["official", "cold", "none"], default="official", help="split to write")
    parser.add_argument("--seed", type=int, default=123, help="split seed (official code: 123)")
    parser.add_argument("--skip-malformed", action="store_true", help="leave malformed lines out (reported)")
    args = parser.parse_args(argv)
    encoder = None
    if not args.no_text:
        from recbole_micro.data.text_encoder import load_text_encoder

        encoder = load_text_encoder(args.text_encoder)
    return run_cli(convert, args.reviews, args.meta, args.images, args.name, args.out, args.kcore, args.official_text,
                   encoder, args.no_text, args.image_dim, None if args.split == "none" else args.split, args.seed,
                   args.skip_malformed)

if __name__ == "__main__":
    sys.exit(main())

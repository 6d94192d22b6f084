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
import ast
import json
import math
import sys
from collections import Counter

import numpy as np

from dataset_prep.common import (
    SEED_RANGE,
    PrepError,
    cli_parser,
    dataset_folder,
    is_field,
    replacing_folder,
    report_malformed,
    run_cli,
    whole_number,
    write_dataset_yaml,
    write_features,
    write_lines,
)
from dataset_prep.inputs import input_file, open_input, read_lines
from dataset_prep.split import split_dataset

ASIN_BYTES = 10
IMAGE_DIM = 4096
TEXT_FIELDS = ("title", "description", "categories", "brand")


MALFORMED = (ValueError, KeyError, TypeError, OverflowError, RecursionError, SyntaxError, MemoryError)


def review_of(line):
    """``(user, item, rating, time)`` of one review line; a ValueError, KeyError or TypeError if it is not one."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    user, item = record["reviewerID"], record["asin"]
    if not (is_field(user) and is_field(item)):
        raise ValueError("reviewerID and asin must be non-empty strings without tabs or line breaks")
    rating, time = float(record.get("overall", 1.0)), int(record.get("unixReviewTime", 0))
    if not math.isfinite(rating):
        raise ValueError(f"overall is {rating}")
    return user, item, rating, time


def read_reviews(path, skip_malformed=False, log=print):
    """[(user, item, rating, time)] in file order, duplicates (user, item) collapsed."""
    reviews, problems, seen, duplicates = [], [], set(), 0
    for number, line in read_lines(path, ": pass --reviews, the reviews_<Category>_5.json.gz file."):
        if not line.strip():
            continue
        try:
            user, item, rating, time = review_of(line)
        except MALFORMED as err:
            problems.append(f"line {number} ({type(err).__name__}: {str(err)[:80]})")
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


def meta_record(line):
    """``(asin, record)`` of one metadata line, a Python literal; a ValueError, KeyError or TypeError if it is not one."""
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        raise ValueError("not a Python literal (a dict of strings, numbers and lists)") from None
    if not isinstance(record, dict):
        raise TypeError("not a dict")
    if not is_field(record["asin"]):
        raise ValueError("asin must be a non-empty string without tabs or line breaks")
    return record["asin"], record


def check_text_fields(record):
    """A TypeError unless title, description and brand are strings and categories a list of lists of strings."""
    for field in ("title", "description", "brand"):
        if not isinstance(record.get(field, ""), str):
            raise TypeError(f"{field} is a {type(record[field]).__name__}, not a string")
    categories = record.get("categories", [])
    if not (isinstance(categories, list) and all(isinstance(path, list) and all(isinstance(n, str) for n in path)
                                                 for path in categories)):
        raise TypeError("categories is not a list of lists of strings")


def read_meta(path, wanted, skip_malformed=False):
    """{asin: record} for the wanted items; each line a Python literal (ast.literal_eval)."""
    meta, problems = {}, []
    for number, line in read_lines(path, ": pass --meta, the meta_<Category>.json.gz file."):
        if not line.strip():
            continue
        try:
            asin, record = meta_record(line)
            if asin in wanted:
                check_text_fields(record)
        except MALFORMED as err:
            problems.append(f"line {number} ({type(err).__name__}: {str(err)[:80]})")
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
    path = input_file(path, ": pass --images, the image_features_<Category>.b file, or leave it out.")
    if dim < 1:
        raise PrepError(f"--image-dim {dim}: a record holds at least one float (the Amazon 2014 files hold 4096).")
    record = ASIN_BYTES + 4 * dim
    size = path.stat().st_size
    if size % record:
        raise PrepError(
            f"{path} is {size} bytes, not a whole number of {record}-byte records (10-byte ASIN + {dim} float32): "
            f"it is truncated at byte {size - size % record}, or --image-dim is wrong."
        )
    found = {}
    with open_input(path) as f:
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
    """The whole conversion: every input read, then ``<out>/<name>/`` written whole; returns that folder."""
    out_dir = dataset_folder(out, name)
    reviews = k_core(read_reviews(reviews_path, skip_malformed, log), kcore, log)
    if not reviews:
        raise PrepError(f"No interactions left in {reviews_path}" + (f" after {kcore}-core filtering." if kcore > 1 else "."))
    items = sorted({r[1] for r in reviews})
    meta = read_meta(meta_path, set(items), skip_malformed)
    log(f"  metadata for {len(meta)} of {len(items)} items")
    images = read_item_images(images_path, items, image_dim, log) if images_path else {}
    with replacing_folder(out_dir, log) as staging:
        write_reviews_and_items(staging, name, reviews, items, meta)
        shapes = {}
        if images:
            shapes["visual"] = write_features(staging, name, "visual", np.stack(list(images.values())), list(images))
        if not no_text:
            shapes["textual"] = write_item_text_features(staging, name, items, meta, official_text, encoder)
        if split:
            split_dataset(staging, name, split, seed=seed, log=log)
        write_dataset_yaml(staging, name, list(shapes), benchmark=bool(split), missing="mean")
    users = len({r[0] for r in reviews})
    log(f"Prepared '{name}' in {out_dir}: {users} users, {len(items)} items, {len(reviews)} interactions")
    for modality, shape in shapes.items():
        log(f"  {modality} features: {shape[0]} x {shape[1]}")
    return out_dir


def read_item_images(path, items, dim, log):
    """{asin: image vector} for the ``items`` that have a record in ``path``, in ``items`` order."""
    images = read_image_features(path, set(items), dim)
    with_image = {i: images[i] for i in items if i in images}
    if not with_image:
        raise PrepError(f"{path} has no record for any item of this dataset: is it the same category?")
    log(f"  image features for {len(with_image)} of {len(items)} items (the rest follow the missing-feature policy)")
    return with_image


def write_reviews_and_items(out_dir, name, reviews, items, meta):
    """Write ``<name>.inter`` (every review, file order) and ``<name>.item`` (the items and their text fields)."""
    write_lines(out_dir / f"{name}.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
                [(u, i, f"{r:g}", t) for u, i, r, t in reviews])
    fields = {f: [field_text(meta.get(i, {}), f) for i in items] for f in TEXT_FIELDS}
    write_lines(out_dir / f"{name}.item", ["item_id:token"] + [f"{f}:token_seq" for f in TEXT_FIELDS],
                [[i] + [fields[f][k] for f in TEXT_FIELDS] for k, i in enumerate(items)])


def write_item_text_features(out_dir, name, items, meta, official_text, encoder):
    """Embed the text of each item that has some and write ``<name>.textual.npy/.tokens``; the matrix shape."""
    from dataset_prep.text_features import write_text_features

    texts = {i: item_text(meta[i], official_text) for i in items if i in meta}
    with_text = [i for i in items if texts.get(i, "").strip()]
    return write_text_features(out_dir, name, with_text, [texts[i] for i in with_text], encoder)


def main(argv=None):
    parser = cli_parser(__doc__, "amazon_raw")
    parser.add_argument("--reviews", required=True, help="reviews_<Category>_5.json.gz")
    parser.add_argument("--meta", required=True, help="meta_<Category>.json.gz")
    parser.add_argument("--images", help="image_features_<Category>.b (optional)")
    parser.add_argument("--name", required=True, help="dataset name, e.g. baby")
    parser.add_argument("--out", default="dataset", help="data_path to write <name>/ into (default: dataset)")
    parser.add_argument("--kcore", type=whole_number(0), default=0,
                        help="k-core filtering (0: off; the 5-core files are already 5-core)")
    parser.add_argument("--official-text", action="store_true", help="reproduce the official script's text exactly")
    parser.add_argument("--text-encoder", default=None, help="local sentence-transformers folder (default: offline MiniLM)")
    parser.add_argument("--no-text", action="store_true", help="skip the text features")
    parser.add_argument("--image-dim", type=whole_number(1), default=IMAGE_DIM,
                        help="floats per image record (default 4096)")
    parser.add_argument("--split", choices=["official", "cold", "none"], default="official", help="split to write")
    parser.add_argument("--seed", type=whole_number(*SEED_RANGE), default=123, help="split seed (official code: 123)")
    parser.add_argument("--skip-malformed", action="store_true", help="leave malformed lines out (reported)")
    args = parser.parse_args(argv)

    def run():
        encoder = None
        if not args.no_text:
            from dataset_prep.text_features import load_text_encoder

            encoder = load_text_encoder(args.text_encoder)
        convert(args.reviews, args.meta, args.images, args.name, args.out, args.kcore, args.official_text, encoder,
                args.no_text, args.image_dim, None if args.split == "none" else args.split, args.seed,
                args.skip_malformed)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())

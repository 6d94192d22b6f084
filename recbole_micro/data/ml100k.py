"""Two real content modalities for MovieLens-100k, computed from the files RecBole ships.

- text: sentence embeddings of "title (year) genre, genre" (384-d MiniLM, offline);
- knowledge: TF-IDF over the (relation, neighbour entity) pairs and one-hop entities of each
  movie's Freebase entity in ``ml-100k.kg``, reduced with truncated SVD and L2-normalised. Items without a linked
  entity (84 of 1,682) or without triples get no row and follow the missing-feature policy.

Both are cached beside the dataset and rebuilt when their inputs or parameters change.
"""
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recbole_micro.data.text_encoder import DEFAULT_TEXT_ENCODER, encode_texts, load_text_encoder
from recbole_micro.files import is_up_to_date, save_features, sha256_of

TEXT_TEMPLATE = "{title} ({year}) {genres}"
KNOWLEDGE_DIM = 64
KNOWLEDGE_MIN_ITEMS = 2  # an entity shared by fewer items says nothing about item similarity
SVD_SEED = 0


def read_atomic(path):
    """Read a RecBole atomic file as strings, with the ``name:type`` header reduced to names."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def item_texts(item_file):
    """``(tokens, texts)`` for every movie of ``ml-100k.item``, in file order."""
    items = read_atomic(item_file)
    texts = []
    for title, year, genres in zip(items["movie_title"], items["release_year"], items["class"]):
        text = TEXT_TEMPLATE.format(title=title, year=year, genres=", ".join(genres.split()))
        texts.append(text.replace(" () ", " "))
    return items["item_id"].tolist(), texts


def build_text_features(dataset_dir, feature_file, token_file, logger=None, encoder=None):
    """Embed the movies' "title (year) genres" with the offline encoder; cached."""
    item_file = Path(dataset_dir) / "ml-100k.item"
    record = {
        "builder": "ml-100k-text",
        "inputs": {item_file.name: sha256_of(item_file)},
        "template": TEXT_TEMPLATE,
        "encoder": DEFAULT_TEXT_ENCODER,
    }
    if is_up_to_date(feature_file, token_file, record):
        return
    tokens, texts = item_texts(item_file)
    if logger:
        logger.info(f"Encoding {len(texts)} movie texts with {DEFAULT_TEXT_ENCODER} (cached afterwards).")
    matrix = encode_texts(texts, encoder=encoder or load_text_encoder())
    save_features(feature_file, token_file, tokens, matrix, record)


def knowledge_matrix(link_file, kg_file, dim=KNOWLEDGE_DIM, min_items=KNOWLEDGE_MIN_ITEMS):
    """Knowledge-graph vectors of the linked items.

    Each item is described by the terms (relation, tail) where its entity is the head,
    (relation^-1, head) where it is the tail, and the bare entities within one hop, its own
    included (so a film and its sequel share a term, as do two films of one series). Terms shared
    by fewer than ``min_items`` items are dropped; TF-IDF weights them and truncated SVD reduces
    them to ``dim`` dimensions.

    Returns:
        tuple: ``(tokens, matrix (len(tokens), dim) float32)``, rows L2-normalised, only for
        items that have at least one kept pair.
    """
    link = read_atomic(link_file)
    kg = read_atomic(kg_file)
    entity_items = link.groupby("entity_id")["item_id"].apply(list).to_dict()
    pairs = [(item, f"@{e}") for e, items in entity_items.items() for item in items]  # (item token, term)
    for entity, relation, other, inverse in (
        (kg["head_id"], kg["relation_id"], kg["tail_id"], ""),
        (kg["tail_id"], kg["relation_id"], kg["head_id"], "~"),
    ):
        for e, r, o in zip(entity, relation, other):
            for item in entity_items.get(e, ()):
                pairs += [(item, f"{inverse}{r}|{o}"), (item, f"@{o}")]
    frame = pd.DataFrame(pairs, columns=["item", "pair"]).drop_duplicates()
    support = frame.groupby("pair")["item"].transform("size")
    frame = frame[support >= min_items]
    items = sorted(frame["item"].unique(), key=lambda t: (len(t), t))
    item_index = {t: i for i, t in enumerate(items)}
    pair_index = {p: i for i, p in enumerate(sorted(frame["pair"].unique()))}
    counts = sp.csr_matrix(
        (np.ones(len(frame)), ([item_index[t] for t in frame["item"]], [pair_index[p] for p in frame["pair"]])),
        shape=(len(items), len(pair_index)),
    )
    return items, term_vectors(counts, dim, SVD_SEED)


def term_vectors(counts, dim, seed):
    """(n, dim) float32 vectors from an (n, terms) count matrix: sublinear TF-IDF, truncated SVD
    (``seed``), rows L2-normalised. The recipe of the knowledge modality, shared with
    ``dataset_prep.scientific``'s catalogue-term modality."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    reduced = TruncatedSVD(n_components=dim, random_state=seed).fit_transform(tfidf)
    reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
    return reduced.astype(np.float32)


def build_knowledge_features(dataset_dir, feature_file, token_file, logger=None):
    """Knowledge-graph item vectors from ``ml-100k.link`` and ``ml-100k.kg``; cached."""
    dataset_dir = Path(dataset_dir)
    link_file, kg_file = dataset_dir / "ml-100k.link", dataset_dir / "ml-100k.kg"
    record = {
        "builder": "ml-100k-knowledge",
        "inputs": {link_file.name: sha256_of(link_file), kg_file.name: sha256_of(kg_file)},
        "dim": KNOWLEDGE_DIM,
        "min_items": KNOWLEDGE_MIN_ITEMS,
        "svd_seed": SVD_SEED,
    }
    if is_up_to_date(feature_file, token_file, record):
        return
    tokens, matrix = knowledge_matrix(link_file, kg_file)
    if logger:
        logger.info(f"Built {matrix.shape[1]}-d knowledge-graph vectors for {len(tokens)} movies (cached).")
    save_features(feature_file, token_file, tokens, matrix, record)

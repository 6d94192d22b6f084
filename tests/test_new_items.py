"""Items that were not in training (issue 19, inductive cold start): their rows in the trained
graphs, their h_i, and scoring them through :class:`recbole_micro.serve.Recommender`."""
import math

import pytest
import torch

from helpers import make
from recbole_micro.errors import NewItemsError
from recbole_micro.model.general_recommender.lattice import LATTICE
from recbole_micro.model.general_recommender.micro import MICRO
from recbole_micro.model.layers import knn_rows, normalize_attached

KNOWN = [3, 7, 12]  # warm items whose features come back as "new" items


def dense_rows(rows, n_items):
    """(Q, N) dense matrix of a graph's rows (duplicate edges summed): small N only."""
    out = torch.zeros(rows.idx.shape[0], n_items, dtype=rows.val.dtype)
    return out.scatter_add_(1, rows.idx, rows.val)


def trained(model_class, tiny, **settings):
    model, _, train = make(model_class, tiny, **settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for batch in list(train)[:2]:  # move the transforms and embeddings off their initial values
        model.train()
        optimizer.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        optimizer.step()
    return model.eval()


def copies_of(model, items):
    return {m: model.raw_feat(m)[items].clone() for m in model.modality_names}


def test_knn_rows_and_their_normalisation_by_hand():
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # PAD, e1, e2, e3
    rows = knn_rows(torch.tensor([[1.0, 0.2]]), keys, k=2)
    cos1, cos3 = 1 / math.sqrt(1.04), 1.2 / (math.sqrt(2) * math.sqrt(1.04))
    assert rows.idx.tolist() == [[1, 3]]
    torch.testing.assert_close(rows.val, torch.tensor([[cos1, cos3]]))
    degree = torch.tensor([0.0, 2.0, 1.0, 4.0])  # the known items' degrees in their own graph
    weights = normalize_attached(rows, degree).val
    row_sum = cos1 + cos3
    torch.testing.assert_close(weights, torch.tensor([[cos1 / math.sqrt(row_sum * 2), cos3 / math.sqrt(row_sum * 4)]]))


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("item_repr", ["graph_id", "graph_feats"])
def test_micro_attaching_a_training_item_reproduces_its_rows_and_embeddings(tiny, layers, item_repr):
    model = trained(MICRO, tiny, n_item_layers=layers, item_repr=item_repr)
    attached = model.attach_items(copies_of(model, KNOWN))
    rows = model.attached_graph_rows(copies_of(model, KNOWN))
    side = model.item_multimodal_embeddings()
    graphs = model.item_graphs()
    for m in model.modality_names:
        n = model.n_items
        torch.testing.assert_close(dense_rows(rows[m]["initial"], n), model.initial_graph(m).to_dense()[KNOWN])
        torch.testing.assert_close(dense_rows(rows[m]["learned"], n), model.learned_graph(m).to_dense()[KNOWN])
        torch.testing.assert_close(dense_rows(attached["graphs"][m], n), graphs[m].to_dense()[KNOWN])
        torch.testing.assert_close(attached["h_m"][m], side["h_m"][m][KNOWN])
    torch.testing.assert_close(attached["alpha"], model.fuse_shared(side["h_m"])[1][KNOWN])
    torch.testing.assert_close(attached["h"], side["h"][KNOWN])
    torch.testing.assert_close(attached["item"], torch.nn.functional.normalize(side["h"][KNOWN], dim=1))


@pytest.mark.parametrize("fusion", ["paper", "official"])
def test_lattice_attaching_a_training_item_reproduces_its_row_and_embedding(tiny, fusion):
    model = trained(LATTICE, tiny, graph_fusion=fusion, n_item_layers=2)
    attached = model.attach_items(copies_of(model, KNOWN))
    torch.testing.assert_close(dense_rows(attached["graph"], model.n_items), model.item_graphs().to_dense()[KNOWN])
    torch.testing.assert_close(attached["h"], model.item_graph_embedding()[KNOWN])


def test_a_new_item_is_never_its_own_or_pads_neighbour_and_known_rows_stay(tiny):
    model = trained(MICRO, tiny)
    before = {m: g.to_dense() for m, g in model.item_graphs().items()}
    new = {m: torch.randn(4, model.modality_dims[m]) for m in model.modality_names}
    attached = model.attach_items(new)
    for m in model.modality_names:
        idx = attached["graphs"][m].idx
        assert idx.min() >= 1 and idx.max() < model.n_items  # known items only, never PAD
        torch.testing.assert_close(model.item_graphs()[m].to_dense(), before[m])


def test_without_a_layer_there_is_nothing_to_attach_to(tiny):
    model = trained(MICRO, tiny, n_item_layers=0)
    with pytest.raises(NewItemsError, match="n_item_layers 0"):
        model.attach_items(copies_of(model, KNOWN))
    lattice = trained(LATTICE, tiny, use_item_graph=False)
    with pytest.raises(NewItemsError, match="use_item_graph False"):
        lattice.attach_items(copies_of(lattice, KNOWN))

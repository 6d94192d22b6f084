r"""LATTICE
################################################
Reference:
    Jinghao Zhang, Yanqiao Zhu, Qiang Liu, Shu Wu, Shuhui Wang and Liang Wang. "Mining Latent
    Structures for Multimedia Recommendation." in ACM MM 2021.

Reference code:
    https://github.com/CRIPAC-DIG/LATTICE

Differences from the paper and the official code (each an option; paper behaviour by default):
    - Graphs are sparse (N x k slots) and built in row chunks: no N x N matrix, same maths.
    - ``graph_fusion: paper`` mixes the per-modality graphs A^m = lambda S~^m + (1-lambda) A~^m
      with the softmax weights (paper Eqs. 5-6); ``official`` normalises the alpha-weighted sum of
      the learned kNN graphs once (combine-then-normalise) and mixes the initial graphs with the
      same weights, as the official code does.
    - Negative similarities are zeroed (paper); the official code keeps them. Each item is its
      own nearest neighbour (Eq. 2 read literally; also the official code).
    - ``reg_target: ego`` regularises the batch's ID embeddings; ``final`` the final embeddings
      (official). ``feat_trainable: True`` trains the raw feature tables (official).
    - ``cf_adj_norm: sym`` is LightGCN's adjacency; ``rw_self_loop`` the official D^-1(A+I).
    - ``use_item_graph: False`` drops the item-graph term: the backbone alone, which with the
      LightGCN backbone trains exactly as RecBole's LightGCN with ``require_pow: True``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.utils import InputType

from recbole_micro.errors import NewItemsError
from recbole_micro.model.abstract_recommender import ItemGraphRecommender
from recbole_micro.model.layers import (
    NORM_EPS,
    combine,
    normalize_attached,
    propagate,
    propagate_rows,
    skip_connection,
    symmetric_normalize,
)

GRAPH_FUSIONS = ("paper", "official")


class LATTICE(ItemGraphRecommender):
    r"""LATTICE learns one item-item graph from all modalities and adds its embeddings to a CF model.

    The modality graphs are mixed with softmax-normalised learnable weights, item ID embeddings
    are propagated over the result, and the normalised item-graph embedding is added to the CF
    backbone's item embedding: :math:`\hat{x}_i = \tilde{x}_i + h_i / \|h_i\|`.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.graph_fusion = config["graph_fusion"]
        if self.graph_fusion not in GRAPH_FUSIONS:
            raise ValueError(f"graph_fusion is {self.graph_fusion!r}; use one of {GRAPH_FUSIONS}")

        self.use_item_graph = config["use_item_graph"]

        # define layers: one learnable weight per modality (equal after the softmax)
        self.modal_weight = nn.Parameter(torch.zeros(len(self.modality_names)))

    def modality_weights(self):
        """alpha = softmax(w) over the modalities (LATTICE Eq. 6); sums to 1."""
        return F.softmax(self.modal_weight, dim=0)

    def build_item_graphs(self):
        """The item graph A (LATTICE Eqs. 5-6, or the official combine-then-normalise order)."""
        alpha = self.modality_weights()
        if self.graph_fusion == "paper":
            per_modality = [
                skip_connection(self.initial_graph(m), self.learned_graph(m), self.lambda_coeff)  # Eq. 5
                for m in self.modality_names
            ]
            return combine(per_modality, alpha)  # Eq. 6
        learned = symmetric_normalize(combine([self.learned_knn(m) for m in self.modality_names], alpha))
        initial = combine([self.initial_graph(m) for m in self.modality_names], alpha)
        return skip_connection(initial, learned, self.lambda_coeff)

    def item_graph_embedding(self):
        """H = A^L E_i (Eq. 7): item ID embeddings propagated over the item graph, (N, d)."""
        return propagate(self.item_graphs(), self.item_embedding.weight, self.n_item_layers)

    def forward(self):
        """Final user and item embeddings, (U, d) and (N, d)."""
        user_cf, item_cf = self.cf_embeddings()
        if not self.use_item_graph:  # the CF backbone alone: with cf_model lightgcn, RecBole's LightGCN
            return user_cf, item_cf
        h = self.item_graph_embedding()
        return user_cf, item_cf + F.normalize(h, p=2, dim=1, eps=NORM_EPS)  # Eq. 8

    @torch.no_grad()
    def explanation_parts(self):
        """What an explanation of a score reads (Eq. 8): ``user_cf``, ``item_cf``, the fused item graph
        ``graphs`` (Eq. 6) and the normalised item-graph embeddings ``h_hat`` (Eq. 7)."""
        user_cf, item_cf = self.cf_embeddings()
        return {"user_cf": user_cf, "item_cf": item_cf, "graphs": self.item_graphs(),
                "h_hat": F.normalize(self.item_graph_embedding(), p=2, dim=1, eps=NORM_EPS)}

    @torch.no_grad()
    def attach_items(self, new_feats):
        """h_i of items that were not in training, from their features alone (Eqs. 1-7 for their rows).

        Their rows of the fused graph are built from their kNN among the known items (raw and
        transformed features) exactly as the known rows are (same fusion order, the trained
        softmax weights); h_i propagates the known items' embeddings along them. They have no
        CF embedding, so their item side of Eq. 8 is h_i / |h_i| alone.

        Returns:
            dict: ``graph`` (rows of A), ``h`` (Q, d), ``item`` (Q, d) = h / |h|, the content part
            users score against, and ``neighbour_cf`` (Q, d) = A x~, the trained neighbours' CF
            embeddings along the same edges: an estimate for the absent x~_i, if one is wanted.
        """
        if not self.use_item_graph:
            raise NewItemsError("LATTICE with use_item_graph False has no item graph to attach new items to.")
        rows = self.attached_graph_rows(new_feats)
        alpha = self.modality_weights()
        if self.graph_fusion == "paper":
            graph = combine([skip_connection(rows[m]["initial"], rows[m]["learned"], self.lambda_coeff)  # Eq. 5
                             for m in self.modality_names], alpha)  # Eq. 6
        else:
            degree = sum(a * rows[m]["learned_degree"] for a, m in zip(alpha, self.modality_names))
            learned = normalize_attached(combine([rows[m]["learned_knn"] for m in self.modality_names], alpha), degree)
            initial = combine([rows[m]["initial"] for m in self.modality_names], alpha)
            graph = skip_connection(initial, learned, self.lambda_coeff)
        h = self.propagate_attached(graph, self.item_graphs(), self.item_embedding.weight)  # Eq. 7
        return {"graph": graph, "h": h, "item": F.normalize(h, p=2, dim=1, eps=NORM_EPS),
                "neighbour_cf": propagate_rows(graph, self.cf_embeddings()[1])}

    def calculate_loss(self, interaction):
        self.clear_cache()
        user_all, item_all = self.forward()
        return self.bpr_and_reg(interaction, user_all, item_all)

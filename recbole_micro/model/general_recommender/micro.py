r"""MICRO
################################################
Reference:
    Jinghao Zhang, Yanqiao Zhu, Qiang Liu, Mengqi Zhang, Shu Wu and Liang Wang. "Latent Structure
    Mining with Contrastive Modality Fusion for Multimedia Recommendation." IEEE TKDE, 2022
    (Eqs. 1-19; arXiv v1 is the earlier model without the modality-specific branch and h_u).

Reference code:
    https://github.com/CRIPAC-DIG/MICRO (implements the v1 model: no Eqs. 11-17)

Differences from the paper and the official code (each an option; the TKDE paper by default):
    - Graphs are sparse (N x k slots) and built in row chunks; the contrastive loss is exact over
      all items, computed by fused attention kernels (or in anchor chunks) with a hand-written
      backward: no N x N matrix.
      ``cl_anchors: batch`` takes only the batch's positive items as anchors (negatives stay all items).
    - L_C uses -log (TKDE Eq. 10 drops it, a typo: v1 and the code have it), is one-directional
      and averaged over modalities (TKDE Eq. 9). ``cl_symmetric`` adds the v1 reverse term and
      ``cl_reduce: sum`` sums over modalities as the official code does.
    - L_S (Eq. 13) is the per-item squared dot product averaged over items; with more than two
      modalities it is summed over the modality pairs.
    - ``use_specific``, ``use_user_pref`` and ``use_contrastive`` switch off Eqs. 11-15, Eqs.
      16-17's h_u and Eqs. 7-10 (the TKDE ablations); the official code equals
      ``use_specific: False, use_user_pref: False, cl_reduce: sum``.
    - Negative similarities are zeroed and each item is its own nearest neighbour, as in LATTICE.
"""
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.utils import InputType

from recbole_micro.model.abstract_recommender import ItemGraphRecommender
from recbole_micro.model.layers import NORM_EPS, propagate, propagate_rows, skip_connection
from recbole_micro.model.losses import CL_KERNELS, info_nce_loss
from recbole_micro.model.sparse import FixedSparse, row_normalized

ITEM_REPRS = ("graph_id", "graph_feats", "feats")
CL_REDUCES = ("mean", "sum")
CL_ANCHORS = ("all", "batch")


class MICRO(ItemGraphRecommender):
    r"""MICRO: per-modality latent item graphs fused by contrastive learning (TKDE version).

    Each modality m has its own graph A^m (Eq. 5) over which item ID embeddings are propagated
    (Eq. 6) into h^m. An attention fuses them into the modality-shared h_c (Eqs. 7-8), trained
    with an InfoNCE loss against each h^m (Eqs. 9-10); the modality-specific parts h^m - h_c
    (Eqs. 11-12) are kept apart by a soft orthogonality loss (Eq. 13) and fused with h_c by a
    second attention (Eqs. 14-15). The user gets the mean h_i of their training items (Eq. 16)
    and the score is :math:`(\tilde{x}_u + \hat{h}_u)^\top (\tilde{x}_i + \hat{h}_i)` (Eq. 17).
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.tau = config["tau"]
        self.cl_weight = config["cl_weight"]
        self.ortho_weight = config["ortho_weight"]
        self.cl_symmetric = config["cl_symmetric"]
        self.cl_reduce = config["cl_reduce"]
        self.cl_chunk_size = config["cl_chunk_size"]
        self.cl_anchors = config["cl_anchors"]
        self.cl_kernel = config["cl_kernel"]
        self.use_contrastive = config["use_contrastive"]
        self.use_specific = config["use_specific"]
        self.use_user_pref = config["use_user_pref"]
        self.item_repr = config["item_repr"]
        if self.item_repr not in ITEM_REPRS:
            raise ValueError(f"item_repr is {self.item_repr!r}; use one of {ITEM_REPRS}")
        if self.cl_reduce not in CL_REDUCES:
            raise ValueError(f"cl_reduce is {self.cl_reduce!r}; use one of {CL_REDUCES}")
        if self.cl_anchors not in CL_ANCHORS:
            raise ValueError(f"cl_anchors is {self.cl_anchors!r}; use one of {CL_ANCHORS}")
        if self.cl_kernel not in CL_KERNELS:
            raise ValueError(f"cl_kernel is {self.cl_kernel!r}; use one of {CL_KERNELS}")

        # define layers (only those the switches use, so every parameter is trained)
        d = self.embedding_size
        if self.use_contrastive:
            self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))  # W, b, q_1
        else:  # 'w/o fusion': LATTICE's global modality weights
            self.modal_weight = nn.Parameter(torch.zeros(len(self.modality_names)))
        if self.use_specific:
            self.specific_query = nn.Parameter(torch.empty(d))  # q_2
        if self.use_user_pref:
            user_item_mean = FixedSparse.from_coo(row_normalized(dataset.inter_matrix(form="csr")))  # D_R^-1 R
            self.register_buffer("user_item_mean", user_item_mean.matrix, persistent=False)
            self.register_buffer("user_item_mean_t", user_item_mean.matrix_t, persistent=False)

        # parameters initialization
        if self.use_contrastive:
            for layer in (self.attention[0], self.attention[2]):
                nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(self.attention[0].bias)
        if self.use_specific:
            nn.init.xavier_uniform_(self.specific_query.view(1, -1))

    # ----- item graphs and modality embeddings (Eqs. 1-6) -----
    def build_item_graphs(self):
        """{m: A^m = lambda S~^m + (1 - lambda) A~^m} (Eq. 5)."""
        return {
            m: skip_connection(self.initial_graph(m), self.learned_graph(m), self.lambda_coeff)
            for m in self.modality_names
        }

    def modality_embeddings(self):
        """{m: h^m}, (N, d) each: H^m_(L) = (A^m)^L H_(0) (Eq. 6).

        H_(0) is the item ID embedding (paper), the transformed features e~^m (``/feats``), or
        h^m = e~^m with no graph at all (``CF+feats``).
        """
        if self.item_repr == "feats":
            return {m: self.transformed_feat(m) for m in self.modality_names}
        graphs = self.item_graphs()
        return {
            m: propagate(
                graphs[m],
                self.item_embedding.weight if self.item_repr == "graph_id" else self.transformed_feat(m),
                self.n_item_layers,
            )
            for m in self.modality_names
        }

    # ----- fusion (Eqs. 7-8, 11-15) -----
    def fuse_shared(self, h_m):
        """Modality-shared h_c = sum_m alpha_i^m h_i^m (Eq. 8).

        With ``use_contrastive`` alpha_i^m = softmax_m(q_1^T tanh(W h_i^m + b)) per item (Eq. 7);
        without it, LATTICE's global softmax weights.

        Returns:
            tuple: ``(h_c (N, d), alpha (N, M))``.
        """
        stacked = torch.stack([h_m[m] for m in self.modality_names], dim=1)  # (N, M, d)
        if self.use_contrastive:
            alpha = F.softmax(self.attention(stacked).squeeze(-1), dim=1)  # Eq. 7
        else:
            alpha = F.softmax(self.modal_weight, dim=0).expand(stacked.shape[0], -1)
        return (alpha.unsqueeze(-1) * stacked).sum(dim=1), alpha

    def specific_embeddings(self, h_m, h_c):
        """Modality-specific h_s^m = h^m - h_c (Eqs. 11-12)."""
        return {m: h_m[m] - h_c for m in self.modality_names}

    def fuse_final(self, h_c, h_s):
        """h_i = gamma_c h_c + sum_m gamma_m h_s^m, gamma = softmax(q_2^T [h_c, h_s^m...]) (Eqs. 14-15).

        Returns:
            tuple: ``(h (N, d), gamma (N, 1 + M))``.
        """
        stacked = torch.stack([h_c] + [h_s[m] for m in self.modality_names], dim=1)  # (N, 1+M, d)
        gamma = F.softmax(stacked @ self.specific_query, dim=1)  # Eq. 14
        return (gamma.unsqueeze(-1) * stacked).sum(dim=1), gamma  # Eq. 15

    def fuse(self, h_m):
        """From the modality embeddings to h_i: Eqs. 7-8, then 11-15 with ``use_specific``.

        Returns:
            dict: ``h_m`` {m: (n, d)}, ``h_c`` (n, d), ``alpha`` (n, M), ``h_s`` {m: (n, d)} or None, ``h`` (n, d).
        """
        h_c, alpha = self.fuse_shared(h_m)
        if not self.use_specific:
            return {"h_m": h_m, "h_c": h_c, "alpha": alpha, "h_s": None, "h": h_c}
        h_s = self.specific_embeddings(h_m, h_c)
        h, _ = self.fuse_final(h_c, h_s)
        return {"h_m": h_m, "h_c": h_c, "alpha": alpha, "h_s": h_s, "h": h}

    def item_multimodal_embeddings(self):
        """Everything the losses and the score need from the item side: :meth:`fuse` of every item's h^m."""
        return self.fuse(self.modality_embeddings())

    def user_preference(self, h):
        """h_u = mean of h_i over the user's training items (Eq. 16), (U, d); 0 without items."""
        return FixedSparse(self.user_item_mean, self.user_item_mean_t).mm(h)

    def final_embeddings(self, h):
        """(x~_u + h_u/|h_u|, x~_i + h_i/|h_i|), the two sides of Eq. 17."""
        user_cf, item_cf = self.cf_embeddings()
        item = item_cf + F.normalize(h, p=2, dim=1, eps=NORM_EPS)
        if not self.use_user_pref:
            return user_cf, item
        return user_cf + F.normalize(self.user_preference(h), p=2, dim=1, eps=NORM_EPS), item

    def forward(self):
        """Final user and item embeddings, (U, d) and (N, d)."""
        return self.final_embeddings(self.item_multimodal_embeddings()["h"])

    @torch.no_grad()
    def explanation_parts(self):
        """What an explanation of a score reads (Eq. 17), once per set of weights.

        Returns:
            dict: ``user_cf``, ``item_cf``, ``graphs`` (A^m per modality, Eq. 5), ``h`` and its
            normalised ``h_hat``, ``alpha`` (Eq. 7), and with the user-preference term the
            normalised ``h_u_hat`` and the norms ``h_u_norm`` (Eq. 16).
        """
        user_cf, item_cf = self.cf_embeddings()
        side = self.item_multimodal_embeddings()
        h = side["h"]
        parts = {"user_cf": user_cf, "item_cf": item_cf, "graphs": self.item_graphs(), "h": h,
                 "h_hat": F.normalize(h, p=2, dim=1, eps=NORM_EPS), "alpha": side["alpha"]}
        if self.use_user_pref:
            h_u = self.user_preference(h)
            parts.update(h_u_hat=F.normalize(h_u, p=2, dim=1, eps=NORM_EPS), h_u_norm=h_u.norm(dim=1).clamp_min(NORM_EPS))
        return parts

    # ----- items outside training (inductive cold start) -----
    @torch.no_grad()
    def attach_items(self, new_feats):
        """h_i of items that were not in training, from their features alone (Eqs. 1-8, 11-15 for their rows).

        Their rows in A^m are their kNN among the known items on the raw and transformed features
        (:meth:`attached_graph_rows`), mixed by the skip connection (Eq. 5); propagation, both
        attentions and the fusion are the trained ones. They have no CF embedding x~_i (no ID
        embedding, no interactions), so their item side of Eq. 17 is h_i / |h_i| alone.

        Returns:
            dict: ``graphs`` {m: rows of A^m}, ``h_m`` {m: (Q, d)}, ``alpha`` (Q, M) (Eq. 7),
            ``h`` (Q, d), ``item`` (Q, d) = h / |h|, the content part users score against, and
            ``neighbour_cf`` (Q, d) = sum_m alpha^m A^m x~, the trained neighbours' CF embeddings
            along the same edges and attention: an estimate for the absent x~_i, if one is wanted.
        """
        rows = self.attached_graph_rows(new_feats)
        graphs = {m: skip_connection(r["initial"], r["learned"], self.lambda_coeff) for m, r in rows.items()}  # Eq. 5
        if self.item_repr == "feats" or (self.item_repr == "graph_feats" and self.n_item_layers == 0):
            h_m = {m: rows[m]["transformed"] for m in self.modality_names}  # H_(0) itself
        else:
            known = self.item_graphs()
            h_m = {m: self.propagate_attached(graphs[m], known[m], self.item_embedding.weight
                                              if self.item_repr == "graph_id" else self.transformed_feat(m))
                   for m in self.modality_names}
        side = self.fuse(h_m)
        item_cf = self.cf_embeddings()[1]
        neighbour_cf = sum(side["alpha"][:, [k]] * propagate_rows(graphs[m], item_cf)
                           for k, m in enumerate(self.modality_names))
        return {"graphs": graphs, "h_m": h_m, "alpha": side["alpha"], "h": side["h"],
                "item": F.normalize(side["h"], p=2, dim=1, eps=NORM_EPS), "neighbour_cf": neighbour_cf}

    # ----- losses (Eqs. 9-10, 13, 19) -----
    def contrastive_anchors(self, interaction):
        """The anchor items of L_C: None for all items (paper), or the batch's distinct positive items."""
        if self.cl_anchors == "all":
            return None
        return torch.unique(interaction[self.ITEM_ID])

    def contrastive_loss(self, h_m, h_c, anchors=None):
        """L_C (Eqs. 9-10): InfoNCE between each modality h^m and the shared h_c.

        The mean runs over all items, or over ``anchors`` only (``cl_anchors: batch``: the
        batch's positive items, so items weigh by their training interactions); the negatives
        are always all items.
        """
        terms = []
        for m in self.modality_names:
            term = info_nce_loss(h_m[m], h_c, self.tau, anchors, self.cl_chunk_size, kernel=self.cl_kernel)
            if self.cl_symmetric:  # arXiv v1 Eq. 10: 1/2 [I(h^m, h_c) + I(h_c, h^m)]
                reverse = info_nce_loss(h_c, h_m[m], self.tau, anchors, self.cl_chunk_size, kernel=self.cl_kernel)
                term = 0.5 * (term + reverse)
            terms.append(term)
        total = torch.stack(terms).sum()
        return total if self.cl_reduce == "sum" else total / len(terms)

    def orthogonality_loss(self, h_s):
        """L_S = mean_i (h_s,i^v . h_s,i^t)^2 (Eq. 13), summed over modality pairs; PAD excluded."""
        loss = 0.0
        for a, b in itertools.combinations(self.modality_names, 2):
            loss = loss + (h_s[a][1:] * h_s[b][1:]).sum(dim=1).pow(2).mean()
        return loss

    def calculate_loss(self, interaction):
        self.clear_cache()
        item_side = self.item_multimodal_embeddings()
        user_all, item_all = self.final_embeddings(item_side["h"])
        mf_loss, reg_loss = self.bpr_and_reg(interaction, user_all, item_all)  # Eq. 18
        losses = [mf_loss, reg_loss]
        if self.use_contrastive:
            anchors = self.contrastive_anchors(interaction)
            losses.append(self.cl_weight * self.contrastive_loss(item_side["h_m"], item_side["h_c"], anchors))
        if self.use_specific and len(self.modality_names) > 1:
            losses.append(self.ortho_weight * self.orthogonality_loss(item_side["h_s"]))
        return tuple(losses)  # Eq. 19: RecBole sums them and logs each

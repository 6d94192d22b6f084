r"""LGMRec
################################################
Reference:
    Zhiqiang Guo, Jianjun Li, Guohui Li, Chaoyang Wang, Si Shi and Bin Ruan. "LGMRec: Local and
    Global Graph Learning for Multimodal Recommendation." in AAAI 2024 (Eqs. 1-15).

Reference code:
    https://github.com/georgeguo-cn/LGMRec (also enoche/MMRec, src/models/lgmrec.py)

A local graph embedding module (collaborative graph embeddings of the ID embeddings by LightGCN,
Eqs. 1-2; per modality, projected item features and the users' means of them propagated over the
same user-item graph, Eqs. 3-5, so that modality embeddings never update the ID embeddings; their
sum, Eq. 6), a global hypergraph embedding module (learnable hyperedges per modality, item- and
user-hyperedge dependencies by a Gumbel-softmax, Eqs. 7-8, hypergraph message passing, Eqs. 9-10),
the fusion E* = E_lge + alpha NORM(E_ghe) (Eq. 12) and inner-product scores (Eq. 13). Trained with
BPR (Eq. 14) plus an InfoNCE loss between the modalities' hypergraph embeddings (Eq. 11) and L2
(Eq. 15).

Differences from the paper and the authors' code (each an option; the paper's behaviour by default):
    - ``hyper_noise: logistic`` perturbs Eq. 8 by log(d) - log(1 - d), d ~ U(0, 1), as the paper
      writes it; ``gumbel`` by -log(-log d), torch's ``gumbel_softmax`` that the code calls.
    - ``hyper_eval_noise: False`` evaluates with the noiseless dependencies softmax(H / tau) (the
      paper does not say); ``True`` samples the noise at evaluation too, as the code does.
    - ``reg_target: ego`` puts the squared L2 of Eq. 15 on the batch's ID embeddings (RecBole's
      EmbLoss, 1/2 sum / batch); ``final`` is the code's: the sum of the unsquared L2 norms of the
      batch's final user, positive and negative embeddings, divided by the batch size.
    - ``cl_reduce: sum`` sums Eq. 11 over the batch's anchors (paper and code); ``mean`` averages.
    - ``cf_model: mf`` (a code option) skips the LightGCN layers of Eqs. 1-2.
    - Any number of modalities: Eqs. 3-10 run per modality and Eq. 11 over every pair (m_a, m_b),
      a < b in ``use_modalities`` order, m_a the anchor (the paper's and the code's (visual,
      textual) for two). With a single modality Eq. 11 does not exist: ``cl_weight`` must be 0.
    - PAD (item 0) has no hyperedge dependencies and user/item 0 is nobody's negative in Eq. 11;
      the authors' framework has no PAD row.
    - The authors' own repository overwrites the visual user dependencies with the textual ones
      (a typo in ``forward``); MMRec's copy, and this file, keep them per modality.
    - Each dependency matrix gets one dropout mask per forward pass, used for both H~ and H~^T of
      Eq. 9 in every layer, as in the code.
"""
import itertools

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.loss import EmbLoss
from recbole.utils import InputType

from recbole_micro.errors import SettingsError
from recbole_micro.model.abstract_recommender import InnerProductRecommender
from recbole_micro.model.backbones import LightGCNBackbone, interaction_adjacency
from recbole_micro.model.layers import NORM_EPS
from recbole_micro.model.losses import log_sum_exp_over_keys
from recbole_micro.model.sparse import FixedSparse, at_least_float32, row_normalized, scipy_to_torch

CF_MODELS = ("mf", "lightgcn")
HYPER_NOISES = ("logistic", "gumbel")
REG_TARGETS = ("ego", "final")
CL_REDUCES = ("sum", "mean")
# Uniform samples are kept this far from 0 and 1 (float32 resolves 1 - 1e-6) so that both noises stay finite.
NOISE_EPS = 1e-6


def dependency_noise(uniform, kind):
    """The noise of Eq. 8 from uniform samples d: log d - log(1 - d) (``logistic``) or -log(-log d) (``gumbel``)."""
    d = uniform.clamp(NOISE_EPS, 1.0 - NOISE_EPS)
    if kind == "logistic":
        return torch.log(d) - torch.log1p(-d)  # Eq. 8
    return -torch.log(-torch.log(d))


def hyperedge_dependencies(logits, tau, noise=None):
    """H~ = SOFTMAX((noise + H) / tau) over the hyperedges (Eq. 8), in float32.

    Args:
        logits (torch.Tensor): (n, A) dependencies H of items or users on the A hyperedges.
        tau (float): temperature.
        noise (torch.Tensor): (n, A) noise, or None for the noiseless softmax(H / tau).

    Returns:
        torch.Tensor: (n, A), rows summing to 1.
    """
    logits = at_least_float32(logits)
    if noise is not None:
        logits = logits + noise
    return torch.softmax(logits / tau, dim=1)  # Eq. 8


def hypergraph_message_passing(item_dep, user_dep, item_input, n_layers):
    """E_i^(h+1) = H~_i H~_i^T E_i^(h), E_u^(h+1) = H~_u H~_i^T E_i^(h) (Eq. 9), dense (n x A) products.

    Args:
        item_dep (torch.Tensor): (N, A) item-hyperedge dependencies (after dropout).
        user_dep (torch.Tensor): (U, A) user-hyperedge dependencies (after dropout).
        item_input (torch.Tensor): (N, d) E_i^(0).
        n_layers (int): H >= 1.

    Returns:
        tuple: (U, d) E_u^(H) and (N, d) E_i^(H).
    """
    items, users = item_input, None
    for _ in range(n_layers):
        hyperedges = item_dep.t() @ items  # (A, d): H~_i^T E_i^(h)
        items, users = item_dep @ hyperedges, user_dep @ hyperedges  # Eq. 9
    return users, items


def cross_view_info_nce(anchor, target, rows, tau, reduce="sum"):
    r"""InfoNCE of Eq. 11: -log( e^{s(a_r, t_r)/tau} / sum_{r'} e^{s(a_r, t_{r'})/tau} ), s the cosine.

    The denominator runs over every row r' >= 1 of ``target`` (the positive among them; row 0, PAD,
    left out); there are no same-view negatives. Computed in float32, the denominators by
    :func:`~recbole_micro.model.losses.log_sum_exp_over_keys` (fused attention where it works,
    so the batch-against-all-users block of logits is never stored).

    Args:
        anchor (torch.Tensor): (n, d) hypergraph embeddings of the anchor modality.
        target (torch.Tensor): (n, d) those of the other modality.
        rows (torch.LongTensor): (B,) the anchors (the batch's users or positive items; repeats count).
        tau (float): temperature.
        reduce (str): ``sum`` (Eq. 11) or ``mean`` over the anchors.

    Returns:
        torch.Tensor: scalar loss.
    """
    with torch.autocast(device_type=anchor.device.type, enabled=False):
        anchor, target = at_least_float32(anchor), at_least_float32(target)
        a = F.normalize(anchor[rows], p=2, dim=1, eps=NORM_EPS)
        keys = F.normalize(target, p=2, dim=1, eps=NORM_EPS)
        positives = (a * keys[rows]).sum(dim=1) / tau
        total = log_sum_exp_over_keys(a, keys[1:], tau) - positives.sum()  # Eq. 11
        return total if reduce == "sum" else total / len(rows)


class LGMRec(InnerProductRecommender):
    r"""LGMRec: decoupled local (collaborative and modality) graph embeddings plus global hypergraph embeddings.

    .. math:: E^* = E^c + \sum_m \mathrm{NORM}(E^m) + \alpha\, \mathrm{NORM}\big(\sum_m E^{m,H}\big),
        \qquad \hat{y}_{ui} = e_u^{*\top} e_i^*
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.cf_model = config["cf_model"]
        self.cf_n_layers = config["cf_n_layers"]
        self.n_mm_layers = config["n_mm_layers"]
        self.hyper_num = config["hyper_num"]
        self.n_hyper_layers = config["n_hyper_layers"]
        self.keep_rate = config["keep_rate"]
        self.hyper_tau = config["hyper_tau"]
        self.hyper_noise = config["hyper_noise"]
        self.hyper_eval_noise = config["hyper_eval_noise"]
        self.alpha = config["alpha"]
        self.cl_weight = config["cl_weight"]
        self.cl_tau = config["cl_tau"]
        self.cl_reduce = config["cl_reduce"]
        self.reg_weight = config["reg_weight"]
        self.reg_target = config["reg_target"]
        self.check_settings()

        # the user-item graph: D^-1/2 A D^-1/2 (Eqs. 1, 5), R (Eq. 7) and D_u^-1 R (Eq. 4)
        inter = dataset.inter_matrix(form="coo").astype(np.float32)
        n_cf_layers = self.cf_n_layers if self.cf_model == "lightgcn" else 0  # mf: the ID embeddings alone
        self.backbone = LightGCNBackbone(interaction_adjacency(inter, self.n_users, self.n_items, "sym"), n_cf_layers)
        binary = sp.csr_matrix(inter)
        binary.data[:] = 1.0
        self.register_fixed("inter", scipy_to_torch(binary))
        self.register_fixed("inter_mean", row_normalized(inter))
        item_mask = torch.ones(self.n_items, 1)
        item_mask[0] = 0.0  # PAD depends on no hyperedge
        self.register_buffer("item_mask", item_mask, persistent=False)

        # define layers and loss
        d = self.embedding_size
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        self.feat_projections = nn.ModuleDict(  # W_m (Eq. 3)
            {m: nn.Linear(self.modality_dims[m], d, bias=False) for m in self.modality_names}
        )
        self.hyperedges = nn.ParameterDict(  # V^m (Eq. 7), one row per hyperedge
            {m: nn.Parameter(torch.empty(self.hyper_num, self.modality_dims[m])) for m in self.modality_names}
        )
        self.dependency_dropout = nn.Dropout(1.0 - self.keep_rate)
        self.reg_loss = EmbLoss()

        # parameters initialization: Xavier, as the paper and the code
        for parameter in [self.user_embedding.weight, self.item_embedding.weight, *self.hyperedges.values(),
                          *(p.weight for p in self.feat_projections.values())]:
            nn.init.xavier_uniform_(parameter)

    def check_settings(self):
        """The switches' values, and the cross-key rule: Eq. 11 needs two modalities when it is weighted."""
        for key, allowed in [("cf_model", CF_MODELS), ("hyper_noise", HYPER_NOISES),
                             ("reg_target", REG_TARGETS), ("cl_reduce", CL_REDUCES)]:
            if getattr(self, key) not in allowed:
                raise SettingsError(f"{key} is {getattr(self, key)!r}; allowed: one of {', '.join(map(repr, allowed))} "
                                    f"(the default is in properties/model/LGMRec.yaml).")
        if self.cl_weight > 0 and len(self.modality_names) < 2:
            raise SettingsError(f"cl_weight is {self.cl_weight!r}, but LGMRec's contrastive loss (Eq. 11) pairs two "
                                f"modalities and only {self.modality_names} is used; set cl_weight: 0 or use two or "
                                f"more modalities.")

    def register_fixed(self, name, coo):
        """Keep a constant sparse matrix as CSR buffers ``<name>`` and ``<name>_t`` (its transpose, for backward)."""
        operator = FixedSparse.from_coo(coo)
        self.register_buffer(name, operator.matrix, persistent=False)
        self.register_buffer(f"{name}_t", operator.matrix_t, persistent=False)

    def fixed(self, name):
        """The constant sparse matrix ``name`` as a :class:`FixedSparse`."""
        return FixedSparse(getattr(self, name), getattr(self, f"{name}_t"))

    # ----- local graph embeddings -----
    def collaborative_embeddings(self):
        """E^c = mean(E^0, ..., E^L), E^(l+1) = D^-1/2 A D^-1/2 E^(l) (Eqs. 1-2): (U, d) and (N, d)."""
        return self.backbone(self.user_embedding.weight, self.item_embedding.weight)

    def projected_item_features(self, m):
        """E~_i^m = E_i^m W_m (Eq. 3), (N, d)."""
        return self.feat_projections[m](self.modality_feat(m))

    def user_modality_features(self, item_feats):
        """e~_u^m = 1/|N_u| sum_{i in N_u} e~_i^m (Eq. 4): each user's mean over their training items, (U, d)."""
        return self.fixed("inter_mean").mm(item_feats)

    def modality_graph_embedding(self, m):
        """E^m = E~^(m,K), E~^(m,k+1) = D^-1/2 A D^-1/2 E~^(m,k) (Eq. 5): the last layer, (U + N, d)."""
        item_feats = self.projected_item_features(m)
        hidden = torch.cat([self.user_modality_features(item_feats), item_feats])
        for _ in range(self.n_mm_layers):
            hidden = self.backbone.adjacency_mm(hidden)  # Eq. 5
        return hidden

    def local_embeddings(self, collaborative, modality):
        """E_lge = E^c + sum_m NORM(E^m) (Eq. 6), (U + N, d).

        Args:
            collaborative (torch.Tensor): (U + N, d) E^c.
            modality (list of torch.Tensor): (U + N, d) E^m per modality.
        """
        return collaborative + sum(F.normalize(e, p=2, dim=1, eps=NORM_EPS) for e in modality)  # Eq. 6

    # ----- global hypergraph embeddings -----
    def hyperedge_logits(self, m):
        """H_i^m = E_i^m V^(m)T and H_u^m = R H_i^m (Eq. 7), through the sparse user-item matrix R.

        Returns:
            tuple: (N, A) item and (U, A) user dependencies before the softmax.
        """
        item_logits = self.modality_feat(m) @ self.hyperedges[m].t()  # Eq. 7
        return item_logits, self.fixed("inter").mm(item_logits)  # Eq. 7: sum over the user's items

    def dependencies(self, logits):
        """H~ of Eq. 8 for this pass: noise while training (and at evaluation with ``hyper_eval_noise``)."""
        noise = None
        if self.training or self.hyper_eval_noise:
            noise = dependency_noise(torch.rand_like(logits, dtype=torch.float32), self.hyper_noise)
        return hyperedge_dependencies(logits, self.hyper_tau, noise)  # Eq. 8

    def hypergraph_embeddings(self, m, item_input):
        """E_u^(m,H), E_i^(m,H) of modality m (Eqs. 7-9), with dropout on H~_i and H~_u.

        Args:
            item_input (torch.Tensor): (N, d) E_i^(m,0): the items' collaborative embeddings E_i^c.

        Returns:
            tuple: (U, d) and (N, d).
        """
        item_logits, user_logits = self.hyperedge_logits(m)
        item_dep = self.dependency_dropout(self.dependencies(item_logits) * self.item_mask)
        user_dep = self.dependency_dropout(self.dependencies(user_logits))
        return hypergraph_message_passing(item_dep, user_dep, item_input, self.n_hyper_layers)  # Eq. 9

    def global_embeddings(self, hyper):
        """E_ghe = sum_m [E_u^(m,H); E_i^(m,H)] (Eq. 10), (U + N, d).

        Args:
            hyper (dict): {m: ((U, d), (N, d))} hypergraph embeddings.
        """
        return sum(torch.cat([users, items]) for users, items in hyper.values())  # Eq. 10

    def fuse(self, local, global_):
        """E* = E_lge + alpha NORM(E_ghe) (Eq. 12), (U + N, d)."""
        return local + self.alpha * F.normalize(global_, p=2, dim=1, eps=NORM_EPS)  # Eq. 12

    def embeddings(self):
        """Every embedding of one pass (Eqs. 1-10 and 12).

        Returns:
            dict: ``user``, ``item``: (U, d), (N, d) final embeddings E*; ``hyper``: {m: ((U, d), (N, d))}
            the hypergraph embeddings of Eq. 9, which Eq. 11 contrasts.
        """
        user_c, item_c = self.collaborative_embeddings()
        modality = [self.modality_graph_embedding(m) for m in self.modality_names]
        local = self.local_embeddings(torch.cat([user_c, item_c]), modality)
        hyper = {m: self.hypergraph_embeddings(m, item_c) for m in self.modality_names}
        final = self.fuse(local, self.global_embeddings(hyper))
        return {"user": final[: self.n_users], "item": final[self.n_users:], "hyper": hyper}

    def forward(self):
        """Final user and item embeddings E* (Eq. 12), (U, d) and (N, d); scores are their inner products (Eq. 13)."""
        parts = self.embeddings()
        return parts["user"], parts["item"]

    # ----- losses -----
    def contrastive_loss(self, hyper, users, items):
        """L_HCL = L_HCL^u + L_HCL^i (Eq. 11), summed over the modality pairs.

        Args:
            hyper (dict): {m: ((U, d), (N, d))} hypergraph embeddings.
            users (torch.LongTensor): the batch's users; items: its positive items.
        """
        total = 0.0
        for anchor, target in itertools.combinations(self.modality_names, 2):
            total = total + cross_view_info_nce(hyper[anchor][0], hyper[target][0], users, self.cl_tau, self.cl_reduce)
            total = total + cross_view_info_nce(hyper[anchor][1], hyper[target][1], items, self.cl_tau, self.cl_reduce)
        return total

    def regularization(self, interaction, user_all, item_all):
        """The L2 term of Eq. 15 (before reg_weight): batch ID embeddings, or the code's norms of the final ones."""
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        if self.reg_target == "final":
            return self.reg_loss(user_all[user], item_all[pos_item], item_all[neg_item])  # sum of norms / batch
        return self.reg_loss(self.user_embedding(user), self.item_embedding(pos_item), self.item_embedding(neg_item),
                             require_pow=True)

    def calculate_loss(self, interaction):
        """L_BPR (Eq. 14, batch mean), lambda_1 L_HCL (Eq. 11) and lambda_2 L2 (Eq. 15)."""
        self.clear_cache()
        parts = self.embeddings()
        mf_loss = self.bpr_loss(interaction, parts["user"], parts["item"])  # Eq. 14
        losses = [mf_loss]
        if self.cl_weight > 0:
            cl = self.contrastive_loss(parts["hyper"], interaction[self.USER_ID], interaction[self.ITEM_ID])
            losses.append(self.cl_weight * cl)
        losses.append(self.reg_weight * self.regularization(interaction, parts["user"], parts["item"]))  # Eq. 15
        return tuple(losses)

r"""BM3
################################################
Reference:
    Xin Zhou, Hongyu Zhou, Yong Liu, Zhiwei Zeng, Chunyan Miao, Pengwei Wang, Yuan You and Feijun
    Jiang. "Bootstrap Latent Representations for Multi-modal Recommendation." in WWW 2023
    (arXiv:2207.05969).

Reference code:
    https://github.com/enoche/BM3 (src/models/bm3.py), the same model as enoche/MMRec
    src/models/bm3.py.

BM3 trains without negative samples: its batches are the training (user, item) pairs only, and
:class:`recbole_micro.trainer.bm3.BM3Trainer` refuses a config that would sample negatives.

Differences from the paper and the authors' code (each an option; the paper by default, except
the L2 term):
    - ``cl_weight`` weighs L_align + L_mask in the total loss (Eq. 10): 1.0 is the paper's
      unweighted sum, the authors' code multiplies them by 2.0 (its YAML's fixed ``cl_weight``).
    - ``reg_form`` (default ``official``): ``paper`` is lambda times the squared L2 norm of the
      batch's user and item ID embeddings (RecBole's EmbLoss with ``require_pow``, per batch row);
      ``official`` is the authors' code's term: the (not squared) Frobenius norms of the final
      user and item embeddings of all users and items, summed and divided by the item count. The
      default is ``official`` because the paper's lambda values were tuned with it; with ``paper``
      at lambda 0.1 the model collapses (docs/models.md).
    - ``feat_trainable: True`` trains copies of the raw feature tables, as the authors' code does
      (``nn.Embedding.from_pretrained(freeze=False)``); the paper uses them as fixed inputs.
    - ``item_id_residual`` adds the item ID embedding h_i^0 to the item's LightGCN layer mean
      (Eq. 3 and the authors' code); False leaves LightGCN's mean alone.
    - The negative cosine C is -cos (paper); the authors' code writes 1 - cos, which differs by
      a constant per term: the same gradients, so no option.
    - The user-item graph is a sparse (U + N) square CSR matrix, multiplied in float32 also under
      ``enable_amp``; the authors' code builds it through a scipy DOK matrix. Same values.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.loss import EmbLoss
from recbole.utils import InputType

from recbole_micro.model.abstract_recommender import InnerProductRecommender
from recbole_micro.model.backbones import LightGCNBackbone, interaction_adjacency
from recbole_micro.model.layers import NORM_EPS
from recbole_micro.model.sparse import at_least_float32

def negative_cosine(online, target):
    """C(a, b) = -a^T b / (||a|| ||b||), averaged over the rows (Eq. 7).

    Args:
        online (torch.Tensor): (B, d) online (predicted) view.
        target (torch.Tensor): (B, d) target view (already detached by the caller).

    Returns:
        torch.Tensor: scalar, in float32 also under autocast.
    """
    online, target = at_least_float32(online), at_least_float32(target)
    cos = (F.normalize(online, dim=1, eps=NORM_EPS) * F.normalize(target, dim=1, eps=NORM_EPS)).sum(dim=1)
    return -cos.mean()


class BM3(InnerProductRecommender):
    r"""BM3: a LightGCN encoder trained by bootstrapping, without negatives.

    The encoder gives :math:`h_u, h_i` (Eqs. 2-3) and each modality's latent
    :math:`h_i^m = e_i^m W_m + b_m` (Eq. 1). A shared linear predictor makes the online view
    :math:`\dot{h} = h W_p + b_p` (Eq. 4); the target view is a detached dropout copy
    :math:`\tilde{h} = sg(h) \odot \mathrm{Bernoulli}` (Eq. 5). The loss reconstructs each
    interaction in both directions (Eq. 6), aligns each modality with the item's ID view (Eq. 8)
    and with its own masked copy (Eq. 9), plus L2 (Eq. 10). The score is
    :math:`\dot{h}_u^\top \dot{h}_i` (Eq. 11).
    """

    input_type = InputType.POINTWISE  # with no negative sampling, a batch is (user, item) positives only

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.item_id_residual = config["item_id_residual"]
        self.feat_trainable = config["feat_trainable"]
        self.dropout_prob = config["dropout_prob"]
        self.cl_weight = config["cl_weight"]
        self.reg_form = config["reg_form"]
        self.reg_weight = config["reg_weight"]

        # define layers and loss
        d = self.embedding_size
        self.user_embedding = nn.Embedding(self.n_users, d)  # h_u^0
        self.item_embedding = nn.Embedding(self.n_items, d)  # h_i^0
        adjacency = interaction_adjacency(
            dataset.inter_matrix(form="coo").astype(np.float32), self.n_users, self.n_items, norm="sym"
        )
        self.backbone = LightGCNBackbone(adjacency, self.n_layers)
        self.feat_projections = nn.ModuleDict({m: nn.Linear(self.modality_dims[m], d) for m in self.modality_names})
        if self.feat_trainable:  # the authors' code trains the raw feature tables
            self.raw_feats = nn.ParameterDict({m: nn.Parameter(self.modality_feat(m).clone()) for m in self.modality_names})
        self.predictor = nn.Linear(d, d)  # f_p, shared by the ID embeddings and every modality
        self.reg_loss = EmbLoss()

        # parameters initialization (the authors' code's: Xavier; biases keep torch's default)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        for linear in [self.predictor, *self.feat_projections.values()]:
            nn.init.xavier_normal_(linear.weight)

    # ----- encoders -----
    def encode(self):
        """h_u (U, d) and h_i (N, d): the LightGCN layer mean (Eqs. 2-3), plus h_i^0 for items when
        ``item_id_residual``."""
        user_e, item_e = self.backbone(self.user_embedding.weight, self.item_embedding.weight)
        if self.item_id_residual:
            item_e = item_e + self.item_embedding.weight  # Eq. 3
        return user_e, item_e

    def raw_feat(self, m):
        """(N, d_m) raw features e^m (trainable copies when ``feat_trainable``)."""
        return self.raw_feats[m] if self.feat_trainable else self.modality_feat(m)

    def modality_latent(self, m, item=None):
        """h_i^m = e_i^m W_m + b_m (Eq. 1): (B, d) for the items ``item``, (N, d) for all when None."""
        feat = self.raw_feat(m)
        return self.feat_projections[m](feat if item is None else feat[item])

    # ----- contrastive view generator -----
    def online_view(self, h):
        """h_dot = h W_p + b_p (Eq. 4), the shared predictor: (B, d) -> (B, d)."""
        return self.predictor(h)

    def target_view(self, h):
        """h_tilde = sg(h) * Bernoulli mask (Eq. 5): dropout with ratio ``dropout_prob`` on the
        detached h, so no gradient flows through the target. (B, d) -> (B, d)."""
        return F.dropout(h.detach(), p=self.dropout_prob, training=True)

    # ----- losses -----
    @staticmethod
    def reconstruction_loss(user_online, item_online, user_target, item_target):
        """L_rec = C(h_dot_u, sg(h_tilde_i)) + C(sg(h_tilde_u), h_dot_i) (Eq. 6)."""
        return negative_cosine(user_online, item_target) + negative_cosine(item_online, user_target)

    @staticmethod
    def alignment_loss(modality_online, item_target):
        """L_align = C(h_dot_i^m, sg(h_tilde_i)) (Eq. 8): a modality's online latent against the item's ID target."""
        return negative_cosine(modality_online, item_target)

    @staticmethod
    def masked_feature_loss(modality_online, modality_target):
        """L_mask = C(h_dot_i^m, sg(h_tilde_i^m)) (Eq. 9): a modality's online latent against its own dropout copy."""
        return negative_cosine(modality_online, modality_target)

    def regularization(self, user, item, user_all, item_all):
        """The L2 term of Eq. 10, before ``reg_weight``.

        ``paper``: ||h_u^0||^2 + ||h_i^0||^2 over the batch's pairs, / (2 B) (RecBole's EmbLoss);
        ``official``: (||H_u||_F + ||H_i||_F) / N over all final embeddings (the authors' code).
        """
        if self.reg_form == "official":
            return (torch.linalg.norm(user_all) + torch.linalg.norm(item_all)) / self.n_items
        return self.reg_loss(self.user_embedding(user), self.item_embedding(item), require_pow=True).squeeze()

    def forward(self):
        """The scoring embeddings h_dot_u (U, d) and h_dot_i (N, d): the online views (Eq. 11)."""
        user_e, item_e = self.encode()
        return self.online_view(user_e), self.online_view(item_e)

    def calculate_loss(self, interaction):
        """(L_rec, cl_weight * sum_m L_align^m, cl_weight * sum_m L_mask^m, reg_weight * L2) (Eq. 10)."""
        self.clear_cache()
        user = interaction[self.USER_ID]
        item = interaction[self.ITEM_ID]
        user_all, item_all = self.encode()
        h_u, h_i = user_all[user], item_all[item]
        user_target, item_target = self.target_view(h_u), self.target_view(h_i)
        rec_loss = self.reconstruction_loss(self.online_view(h_u), self.online_view(h_i), user_target, item_target)
        align_loss, mask_loss = 0.0, 0.0
        for m in self.modality_names:
            h_m = self.modality_latent(m, item)
            modality_online = self.online_view(h_m)
            align_loss = align_loss + self.alignment_loss(modality_online, item_target)
            mask_loss = mask_loss + self.masked_feature_loss(modality_online, self.target_view(h_m))
        reg = self.regularization(user, item, user_all, item_all)
        return rec_loss, self.cl_weight * align_loss, self.cl_weight * mask_loss, self.reg_weight * reg

r"""VBPR
################################################
Reference:
    Ruining He and Julian McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback." in AAAI 2016.

Reference code:
    https://github.com/arogers1/VBPR (the authors' model as described in the paper).

Differences from the paper:
    - The content vector f_i is the concatenation of every modality used (as the LATTICE and
      MICRO papers do for their VBPR baseline), not only the visual CNN feature.
    - The global offset alpha and the user bias beta_u are left out: they add the same amount to
      every item of a user, so neither the BPR loss nor the ranking depends on them.
    - Trained with Adam on mini-batches of (user, positive, negative) triples, as every RecBole
      model is, instead of SGD on single triples.
"""
import torch
import torch.nn as nn
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType

from recbole_micro.model.abstract_recommender import MultimodalRecommender


class VBPR(MultimodalRecommender):
    r"""VBPR scores an item with a matrix-factorisation term plus a content term.

    .. math::
        \hat{x}_{u,i} = \beta_i + \gamma_u^\top \gamma_i + \theta_u^\top (E f_i) + \beta'^\top f_i

    where :math:`f_i` is the item's (concatenated) content features, :math:`E` projects them to
    ``feat_embedding_size`` dimensions and :math:`\beta'` is the content bias.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.feat_embedding_size = config["feat_embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.feat_reg_weight = config["feat_reg_weight"]

        # define layers and loss
        content_feat = torch.cat([self.modality_feat(n) for n in self.modality_names], dim=1)
        self.register_buffer("content_feat", content_feat, persistent=False)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)  # gamma_u
        self.user_feat_embedding = nn.Embedding(self.n_users, self.feat_embedding_size)  # theta_u
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)  # gamma_i
        self.item_bias = nn.Embedding(self.n_items, 1)  # beta_i
        self.feat_projection = nn.Linear(content_feat.shape[1], self.feat_embedding_size, bias=False)  # E
        self.feat_bias = nn.Linear(content_feat.shape[1], 1, bias=False)  # beta'
        self.mf_loss = BPRLoss()
        self.reg_loss = EmbLoss()

        # storage variables for full sort evaluation acceleration
        self.restore_item_e = None
        self.restore_item_bias = None
        self.other_parameter_name = ["restore_item_e", "restore_item_bias"]

        # parameters initialization (biases start at zero)
        self.apply(xavier_normal_initialization)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.feat_bias.weight)

    def item_representation(self, item):
        """Item factors and bias.

        Args:
            item (torch.LongTensor): [B] item ids, or None for all items.

        Returns:
            tuple: ``([B, embedding_size + feat_embedding_size] item vector [gamma_i; E f_i],
            [B] bias beta_i + beta'^T f_i)``.
        """
        feat = self.content_feat if item is None else self.content_feat[item]
        item_e = self.item_embedding.weight if item is None else self.item_embedding(item)
        item_b = self.item_bias.weight if item is None else self.item_bias(item)
        vector = torch.cat([item_e, self.feat_projection(feat)], dim=1)
        return vector, (item_b + self.feat_bias(feat)).squeeze(-1)

    def user_representation(self, user):
        """[B, embedding_size + feat_embedding_size] user vector [gamma_u; theta_u]."""
        return torch.cat([self.user_embedding(user), self.user_feat_embedding(user)], dim=1)

    def forward(self, user, item):
        """[B] scores of the (user, item) pairs."""
        item_v, item_b = self.item_representation(item)
        return (self.user_representation(user) * item_v).sum(dim=1) + item_b

    def calculate_loss(self, interaction):
        if self.restore_item_e is not None:
            self.restore_item_e, self.restore_item_bias = None, None

        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]

        pos_scores = self.forward(user, pos_item)
        neg_scores = self.forward(user, neg_item)
        mf_loss = self.mf_loss(pos_scores, neg_scores)

        reg_loss = self.reg_loss(
            self.user_embedding(user),
            self.user_feat_embedding(user),
            self.item_embedding(pos_item),
            self.item_embedding(neg_item),
            self.item_bias(pos_item),
            self.item_bias(neg_item),
            require_pow=True,
        )
        feat_reg_loss = 0.5 * (self.feat_projection.weight.pow(2).sum() + self.feat_bias.weight.pow(2).sum())
        return mf_loss, self.reg_weight * reg_loss, self.feat_reg_weight * feat_reg_loss

    def predict(self, interaction):
        return self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def export_embeddings(self):
        """[theta_u, 1] and [gamma_i, beta_i]: the score with the item bias as one inner product."""
        users = self.user_representation(torch.arange(self.n_users, device=self.item_bias.weight.device))
        items, bias = self.item_representation(None)
        ones = torch.ones(len(users), 1, device=users.device, dtype=users.dtype)
        return torch.cat([users, ones], dim=1), torch.cat([items, bias.view(-1, 1)], dim=1)

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        if self.restore_item_e is None:
            self.restore_item_e, self.restore_item_bias = self.item_representation(None)
        scores = self.user_representation(user) @ self.restore_item_e.t() + self.restore_item_bias
        return scores.view(-1)

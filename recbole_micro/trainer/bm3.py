"""BM3's trainer: RecBole's training loop on the positive (user, item) pairs alone, no negatives.

BM3 (:mod:`recbole_micro.model.general_recommender.bm3`) learns by bootstrapping: its loss never
reads a negative item. RecBole's dataloader, though, draws negatives whenever
``train_neg_sample_args`` names a distribution, and for a POINTWISE model it appends them to the
batch as extra (user, item) rows with label 0, which BM3 would take for interactions. So
``BM3Trainer`` refuses such a config in one line before anything trains (and a training
dataloader that samples anyway, at the start of ``fit``); otherwise it is our
:class:`~recbole_micro.trainer.trainer.Trainer` unchanged: checkpoints, resume, ``enable_amp``,
early stopping.
"""
from recbole_micro.errors import SettingsError
from recbole_micro.trainer.trainer import Trainer

NO_SAMPLING = "none"  # RecBole's distribution once train_neg_sample_args is empty (~)


def negative_sampling_problem(model, neg_sample_args):
    """The one-line message refusing ``neg_sample_args`` (RecBole's dict), or None when it samples nothing."""
    distribution = (neg_sample_args or {}).get("distribution", NO_SAMPLING)
    if distribution in (None, "None", NO_SAMPLING):
        return None
    return (f"train_neg_sample_args is {dict(neg_sample_args)!r}; {model} trains on positive (user, item) pairs "
            f"only and allows no negative sampling: set train_neg_sample_args: ~ "
            f"(the default is in properties/model/{model}.yaml).")


class BM3Trainer(Trainer):
    """RecBole's trainer for a model that trains on positives only: refuses negative sampling at start-up."""

    def __init__(self, config, model):
        problem = negative_sampling_problem(config["model"], config["train_neg_sample_args"])
        if problem:
            raise SettingsError(problem)
        super().__init__(config, model)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``; a training dataloader that samples negatives (built from another config) is refused."""
        problem = negative_sampling_problem(self.config["model"], getattr(train_data, "neg_sample_args", None))
        if problem:
            raise SettingsError(f"the training dataloader samples negatives: {problem}")
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

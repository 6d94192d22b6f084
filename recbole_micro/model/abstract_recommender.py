"""The base class of recbole-micro's multimodal models."""
import torch
from recbole.model.abstract_recommender import GeneralRecommender

from recbole_micro.errors import FeatureFileError


class MultimodalRecommender(GeneralRecommender):
    """A :class:`GeneralRecommender` that receives item modality features from the dataset.

    The features of the modalities in ``config['use_modalities']`` (all configured ones when
    it is empty) are registered as non-persistent buffers ``<name>_feat`` of shape
    (n_items, dim): they follow ``.to(device)`` but are not written into every checkpoint.
    Row 0 (PAD) is zero, so normalise with an epsilon.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        available = getattr(dataset, "item_modalities", None)
        if not available:
            raise FeatureFileError(
                f"{self.__class__.__name__} needs item modality features, but the dataset has none; "
                f"build it with recbole_micro.utils.create_dataset and name the features under "
                f"`modalities` in the dataset YAML."
            )
        self.use_modalities = config["use_modalities"]
        names = list(self.use_modalities or available)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise FeatureFileError(
                f"use_modalities names {unknown}, but the dataset only has {list(available)}."
            )
        self.modality_names = names
        self.modality_dims = {}
        for name in names:
            self.register_buffer(f"{name}_feat", torch.from_numpy(available[name]), persistent=False)
            self.modality_dims[name] = int(available[name].shape[1])

    def modality_feat(self, name):
        """(n_items, dim) features of modality ``name``."""
        return getattr(self, f"{name}_feat")

    def other_parameter(self):
        parameters = super().other_parameter()
        parameters["modality_dims"] = dict(self.modality_dims)
        return parameters

    def load_other_parameter(self, para):
        para = dict(para or {})
        trained_dims = para.pop("modality_dims", None)
        if trained_dims is not None and trained_dims != self.modality_dims:
            changed = {
                n: (trained_dims.get(n), self.modality_dims.get(n))
                for n in set(trained_dims) | set(self.modality_dims)
                if trained_dims.get(n) != self.modality_dims.get(n)
            }
            raise FeatureFileError(
                "The checkpoint was trained on other modality dimensions than the dataset's feature "
                "files now have: " + ", ".join(f"{n}: trained {a}, now {b}" for n, (a, b) in sorted(changed.items()))
                + ". Retrain, or restore the feature files the model was trained with."
            )
        super().load_other_parameter(para)

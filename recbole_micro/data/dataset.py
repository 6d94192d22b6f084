"""A RecBole dataset that also loads item modality features (visual, textual, ...)."""
from collections import OrderedDict

from recbole.data.dataset import Dataset
from recbole.utils import FeatureType, set_color
from recbole.utils.argument_list import dataset_arguments

from recbole_micro.data.builders import run_feature_builder
from recbole_micro.data.features import (
    FEATURE_ARGUMENTS,
    align_to_items,
    check_finite,
    file_fingerprint,
    impute_missing,
    parse_modalities,
    read_feature_matrix,
    read_token_rows,
    stack_float_seq,
)
from recbole_micro.errors import FeatureFileError

REUSE_ARGUMENTS = ["seed", "repeatable"] + FEATURE_ARGUMENTS


class MultimodalDataset(Dataset):
    """RecBole's :class:`Dataset` plus item modality features, aligned to internal item ids.

    The modalities named in ``config['modalities']`` are loaded once, after RecBole has remapped
    item tokens to ids, into ``item_modalities``: ``{name: float32 array (n_items, dim)}`` whose
    row ``i`` belongs to internal item id ``i`` and whose row 0 (PAD) is all zeros. They are kept
    out of ``item_feat``, so no training or evaluation batch carries copies of them (RecBole joins
    every ``item_feat`` column, negatives included, into each batch). The train/valid/test
    datasets share the same arrays.

    Attributes:
        item_modalities (OrderedDict): modality name -> (n_items, dim) float32 features.
        imputed_items (dict): modality name -> bool (n_items,), True where the row was imputed.
    """

    def __init__(self, config):
        self.item_modalities = OrderedDict()
        self.imputed_items = {}
        self.feature_fingerprints = {}
        self._raw_item_tokens = set()
        super().__init__(config)

    def _load_data(self, token, dataset_path):
        super()._load_data(token, dataset_path)
        # Item tokens as they are in the files, before RecBole's filtering: a feature row whose
        # token is not among them belongs to another dataset, not to a filtered-out item.
        for feat in (self.inter_feat, self.item_feat):
            if feat is not None and self.iid_field in feat:
                self._raw_item_tokens.update(feat[self.iid_field].astype(str).tolist())

    def _load_feat(self, filepath, source):
        try:
            return super()._load_feat(filepath, source)
        except ValueError as err:
            raise FeatureFileError(
                f"{filepath} could not be parsed by RecBole: {err}. float_seq columns must hold "
                f"space-separated numbers (see RecBole's atomic file format)."
            ) from err

    def _data_processing(self):
        # RecBole's sequence, with the modality step after ids are remapped and missing values
        # filled, and before normalisation (which must not rescale float_seq features).
        self.feat_name_list = self._build_feat_name_list()
        if self.benchmark_filename_list is None:
            self._data_filtering()
        self._remap_ID_all()
        self._user_item_feat_preparation()
        self._fill_nan()
        self._load_item_modalities()
        self._set_label_by_threshold()
        self._normalize()
        self._discretization()
        self._preload_weight_matrix()

    def _load_item_modalities(self):
        specs = parse_modalities(
            self.config["modalities"], self.dataset_path, self.config["missing_feature_policy"]
        )
        item_tokens = self.field2id_token[self.iid_field]
        for spec in specs:
            if spec.build:
                run_feature_builder(spec, self.dataset_path, self.logger)
            if spec.field is not None:
                features, present = stack_float_seq(spec, self._pop_float_seq_column(spec))
            else:
                matrix = read_feature_matrix(spec)
                token_rows = read_token_rows(spec, matrix.shape[0])
                features, present = align_to_items(
                    spec, matrix, token_rows, item_tokens, self._raw_item_tokens,
                    self.config["unknown_feature_policy"], self.logger,
                )
                self.feature_fingerprints[spec.name] = {
                    str(path): file_fingerprint(path) for path in (spec.file, spec.tokens)
                }
            check_finite(spec, features, present, item_tokens)
            self.imputed_items[spec.name] = impute_missing(spec, features, present, item_tokens, self.logger)
            self.item_modalities[spec.name] = features
            self.logger.info(
                set_color("Modality", "blue") + f" [{spec.name}]: {features.shape[1]}-d for "
                f"{len(item_tokens) - 1} items from {spec.source}"
            )
        self.feat_name_list = self._build_feat_name_list()

    def _pop_float_seq_column(self, spec):
        """Take a float_seq modality column out of ``item_feat`` (it must not reach batches)."""
        if self.item_feat is None or spec.field not in self.item_feat:
            raise FeatureFileError(
                f"Modality '{spec.name}' reads the float_seq column '{spec.field}' of "
                f"{self.dataset_path}/{self.dataset_name}.item, but it was not loaded. Add it to "
                f"`load_col: {{item: [{self.iid_field}, {spec.field}]}}` in the dataset YAML."
            )
        if self.field2type[spec.field] != FeatureType.FLOAT_SEQ:
            raise FeatureFileError(
                f"Column '{spec.field}' of {self.dataset_name}.item is {self.field2type[spec.field].value}, "
                f"not float_seq; declare it as `{spec.field}:float_seq` in the file header."
            )
        values = self.item_feat[spec.field].tolist()
        self._del_col(self.item_feat, spec.field)
        return values

    def is_reusable_for(self, config):
        """Whether this (unpickled) dataset matches ``config`` and the feature files on disk."""
        for arg in dataset_arguments + REUSE_ARGUMENTS:
            if config[arg] != self.config[arg]:
                return False
        try:
            return all(
                file_fingerprint(path) == tuple(fingerprint)
                for files in self.feature_fingerprints.values()
                for path, fingerprint in files.items()
            )
        except FileNotFoundError:
            return False

    def __str__(self):
        lines = [super().__str__()]
        for name, features in self.item_modalities.items():
            imputed = int(self.imputed_items[name].sum())
            lines.append(set_color(f"Modality {name}", "blue") + f": {features.shape[1]}-d, {imputed} imputed")
        return "\n".join(lines)

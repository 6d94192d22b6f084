"""Errors with messages that name the file or setting at fault and say how to fix it."""


class RecBoleMicroError(Exception):
    """Base class: the run script prints these as one clear message and exits non-zero."""


class UnknownModelError(RecBoleMicroError, ValueError):
    """The model name is neither a recbole-micro model nor a RecBole model."""


class ModelSpecError(RecBoleMicroError, ValueError):
    """A compare-mode model spec ``MODEL:key=value,...`` is malformed."""


class DatasetNotPreparedError(RecBoleMicroError, FileNotFoundError):
    """The dataset's atomic files are not where RecBole will look for them."""


class FeatureFileError(RecBoleMicroError, ValueError):
    """A modality feature file is missing, malformed or misaligned with the dataset."""


class TextEncoderError(RecBoleMicroError, OSError):
    """The sentence encoder is not available offline."""


class SettingsError(RecBoleMicroError, ValueError):
    """A setting's value is not what its YAML allows (its type, range or choices)."""


class ResumeError(RecBoleMicroError, FileNotFoundError):
    """A run cannot be resumed from the file given (missing, unreadable, or another model's)."""


class CheckpointError(RecBoleMicroError, ValueError):
    """A checkpoint is missing, unreadable, or holds objects that loading would run as code."""


class DistributedError(RecBoleMicroError, ValueError):
    """A multi-process run cannot start as asked (process counts, GPUs, an unsupported setting)."""


class NewItemsError(RecBoleMicroError, ValueError):
    """New items cannot be attached: their feature files do not fit the model, or the model has no graph for them."""


class RunsStopped(RecBoleMicroError):
    """A comparison stopped before its next run because its ``STOP`` file asks it to (not a failure)."""


class ServeError(RecBoleMicroError, ValueError):
    """A recommendation request names an unknown user, a bad file type or a bad setting."""


class ParamsFileError(RecBoleMicroError, FileNotFoundError):
    """A tuning params file is neither an existing path nor the name of a shipped one (``hyper/``)."""

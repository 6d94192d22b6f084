"""Trainers that load their own checkpoints under torch >= 2.6, each from a file of its own.

torch 2.6 made ``torch.load`` default to ``weights_only=True``, which refuses RecBole's
checkpoints (they hold the ``Config`` object) when the trainer reloads the best model. The
checkpoints are files this process wrote, so they are loaded explicitly with
``weights_only=False``; no environment variable is needed.

RecBole names a checkpoint ``<model>-<local time to the second>.pth``: two runs of one model
started in the same second (parallel comparisons, Ray Tune trials) write the same file and
reload each other's best model for the test evaluation. Our trainers add a random suffix.
"""
import uuid
from pathlib import Path

import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color


def load_checkpoint(path, device="cpu"):
    """Load a RecBole checkpoint we wrote (trusted: it pickles the run's Config)."""
    return torch.load(path, map_location=device, weights_only=False)


def restore_model(model, checkpoint):
    """Load a checkpoint's weights and cached tensors into ``model``."""
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.load_state_dict(checkpoint["state_dict"])


def unique_checkpoint_file(path):
    """``path`` (``<dir>/<model>-<time>.pth``) with a random suffix no other run will pick."""
    path = Path(path)
    return str(path.with_name(f"{path.stem}-{uuid.uuid4().hex[:8]}{path.suffix}"))


class CheckpointMixin:
    """Replaces the two places where RecBole's trainers call ``torch.load``, and gives every
    run its own checkpoint file."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.saved_model_file = unique_checkpoint_file(self.saved_model_file)

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(resume_file, self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"Checkpoint {resume_file} was trained with model {checkpoint['config']['model']}, "
                f"not {self.config['model']}; loading its weights may fail."
            )
        restore_model(self.model, checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            restore_model(self.model, load_checkpoint(checkpoint_file, self.device))
            self.logger.info(set_color("Loading model structure and parameters from", "blue") + f" {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


_WRAPPED = {}


def with_checkpoint_loading(trainer_class):
    """``trainer_class`` (a RecBole trainer) with :class:`CheckpointMixin` mixed in."""
    if issubclass(trainer_class, CheckpointMixin):
        return trainer_class
    if trainer_class not in _WRAPPED:
        _WRAPPED[trainer_class] = type(trainer_class.__name__, (CheckpointMixin, trainer_class), {})
    return _WRAPPED[trainer_class]


class Trainer(CheckpointMixin, RecBoleTrainer):
    """RecBole's :class:`~recbole.trainer.Trainer` with explicit checkpoint loading."""


class LRDecayTrainer(Trainer):
    """Trainer with the official code's learning-rate decay: lr * lr_decay^(epoch / lr_decay_epochs).

    The factor is applied once per epoch (a LambdaLR stepped per epoch); ``lr_decay: 1`` (the
    default) leaves the learning rate constant.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.lr_decay = config["lr_decay"]
        self.lr_decay_epochs = config["lr_decay_epochs"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda epoch: self.lr_decay ** (epoch / self.lr_decay_epochs)
        )

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.scheduler.step()
        return loss


class LATTICETrainer(LRDecayTrainer):
    """LATTICE's trainer: optional per-epoch learning-rate decay."""


class MICROTrainer(LRDecayTrainer):
    """MICRO's trainer: optional per-epoch learning-rate decay."""

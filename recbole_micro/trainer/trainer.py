"""Trainers whose checkpoints load without running code, each in a file of its own.

RecBole's trainers pickle the ``Config`` object into the best-model checkpoint, which only loads
with ``torch.load(weights_only=False)``. Ours write it as plain data and read it with
``weights_only=True`` (:mod:`recbole_micro.trainer.checkpoints`); an older, pickled checkpoint is read
only when ``trust_checkpoint`` is set (``--trust-checkpoint``).

RecBole names a checkpoint ``<model>-<local time to the second>.pth``: two runs of one model
started in the same second (parallel comparisons, Ray Tune trials) write the same file and
reload each other's best model for the test evaluation. Our trainers add a random suffix.

Resume: after every evaluated epoch the trainer writes ``<checkpoint stem>.resume.pth`` beside
the best-model checkpoint (atomically: a kill during the write leaves the previous state), with
everything the next epoch depends on: the current weights, optimiser and lr schedule, the
early-stopping counters and best result so far, and the torch, numpy, Python and dataloader
random states. :meth:`CheckpointMixin.resume_from` restores it, so that a run killed after
epoch k and resumed ends with the metrics of the uninterrupted run.

Multi-process runs (:mod:`recbole_micro.trainer.distributed`): the trainer wraps the model in DDP on
GPUs and CPUs alike, all processes share the first one's checkpoint path, only the first one
writes it, and the evaluation gathers every process's users.
"""
import inspect
import random
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color

from recbole_micro.errors import CheckpointError, ResumeError
from recbole_micro.files import is_writer, write_atomically
from recbole_micro.trainer.precision import check_trainer_settings, sparse_bfloat16_failure
from recbole_micro.trainer import distributed
from recbole_micro.trainer.checkpoints import from_plain, load_checkpoint, save_checkpoint, to_plain

RESUME_SUFFIX = ".resume.pth"


def restore_model(model, checkpoint, source="the checkpoint"):
    """Load a checkpoint's weights and cached tensors into ``model``, once their names and shapes fit it.

    Raises:
        CheckpointError: the weights are another model's, or of other shapes (another dataset's
            items, other embedding settings); the message names the first that differ.
    """
    model.load_other_parameter(checkpoint.get("other_parameter"))  # names a changed feature file first
    misfits = weight_misfits(checkpoint["state_dict"], model.state_dict())
    if misfits:
        raise CheckpointError(f"{source} does not fit this model ({'; '.join(misfits[:3])}"
                              f"{' ...' if len(misfits) > 3 else ''}): it was trained on another dataset "
                              "(other item or user counts, feature widths) or with other model settings.")
    model.load_state_dict(checkpoint["state_dict"])


def weight_misfits(saved, own):
    """What keeps the weights ``saved`` from loading into a model whose state dict is ``own``, one line each."""
    misfits = [f"{name}: saved {tuple(value.shape)}, here {tuple(own[name].shape)}" for name, value in saved.items()
               if name in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[name].shape)]
    misfits += [f"{name}: saved, not in this model" for name in saved if name not in own]
    misfits += [f"{name}: in this model, not saved" for name in own if name not in saved]
    return misfits


def identity_differences(saved, current):
    """The entries in which two run identities (:attr:`CheckpointMixin.run_identity`) differ, one line each."""
    lines = []
    if saved.get("dataset") != current.get("dataset"):
        lines.append(f"dataset {saved.get('dataset')!r}, here {current.get('dataset')!r}")
    elif saved.get("dataset_files") != current.get("dataset_files"):
        lines.append(f"the files of dataset {current.get('dataset')!r} (atomic and feature files) have changed "
                     "since the run started")
    settings, here = saved.get("settings", {}), current.get("settings", {})
    for key in sorted(set(settings) | set(here)):
        if settings.get(key) != here.get(key):
            lines.append(f"{key}: {settings.get(key, '(unset)')}, here {here.get(key, '(unset)')}")
    return lines


def resume_file_of(checkpoint_file):
    """Where the resume state of the run whose best model is ``checkpoint_file`` is kept."""
    path = Path(checkpoint_file)
    if path.name.endswith(RESUME_SUFFIX):
        return path
    return path.with_name(path.stem + RESUME_SUFFIX)


def checkpoint_file_of(resume_file):
    """The best-model checkpoint that ``resume_file`` belongs to."""
    path = Path(resume_file)
    return path.with_name(path.name[: -len(RESUME_SUFFIX)] + ".pth") if path.name.endswith(RESUME_SUFFIX) else path


def random_states(train_data):
    """The random states the next epoch draws from (shuffling, negative sampling, dropout)."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "python": random.getstate(),
        "dataloader": train_data.generator.get_state(),
    }


def set_random_states(states, train_data):
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(states["python"])
    train_data.generator.set_state(states["dataloader"])


def unique_checkpoint_file(path):
    """``path`` (``<dir>/<model>-<time>.pth``) with a random suffix no other run will pick."""
    path = Path(path)
    return str(path.with_name(f"{path.stem}-{uuid.uuid4().hex[:8]}{path.suffix}"))


class CheckpointMixin:
    """Replaces the two places where RecBole's trainers call ``torch.load``, and gives every
    run its own checkpoint file, written as plain data."""

    trust_checkpoint = False  # also read pickled (RecBole-format) checkpoints: --trust-checkpoint
    # What a resume state must match: {"dataset", "dataset_files" (a digest), "settings" (those that
    # shape the model)}, set by the caller; None records and checks nothing.
    run_identity = None

    def __init__(self, config, model):
        check_trainer_settings(config)
        multi_process = distributed.is_distributed(config)
        config["single_spec"] = True  # RecBole wraps one GPU per process only; ours below fits the CPU too
        try:
            super().__init__(config, model)
        finally:
            config["single_spec"] = not multi_process
        self.saved_model_file = unique_checkpoint_file(self.saved_model_file)
        if multi_process and isinstance(self, RecBoleTrainer):
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # as RecBole does
            self.distributed_model = distributed.wrap_model(self.model, self.device)
            self.eval_collector = distributed.GatheringCollector(config)
            self.saved_model_file = distributed.broadcast_from_first(self.saved_model_file)  # one file for all

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's best-model checkpoint, with the config as plain data and written atomically."""
        if not isinstance(self, RecBoleTrainer):  # the decision-tree trainers keep RecBole's format
            return super()._save_checkpoint(epoch)
        if not is_writer(self.config):  # one file, written by the first process
            return None
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        save_checkpoint(saved_model_file, {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        })
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
        return None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``, keeping a resume state after every evaluated epoch (when ``saved``)."""

        def after_epoch(epoch_idx, valid_score):
            if saved and not distributed.is_distributed(self.config):  # resume works in one process only
                self.save_resume_state(epoch_idx, train_data)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        if "callback_fn" not in inspect.signature(super().fit).parameters:  # a trainer without epochs to resume
            return super().fit(train_data, valid_data, verbose, saved, show_progress)
        self._fit_started = time.time()
        state = getattr(self, "_resume_state", None)
        if state is not None:
            self._resume_state = None
            if state["finished"]:  # nothing left to train; the best model is in its checkpoint already
                return self.best_valid_score, self.best_valid_result
            set_random_states(state["random"], train_data)  # last, after every draw of the set-up
        if distributed.is_distributed(self.config) and train_data.shuffle:
            train_data.sampler.seed = self.config["seed"]  # DistributedSampler shuffles with seed 0 otherwise
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn=after_epoch)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """RecBole's epoch; a RecBole model whose sparse products fail in bfloat16 is one line, not a traceback."""
        try:
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        except (RuntimeError, NotImplementedError) as err:
            failure = sparse_bfloat16_failure(err, self.config)
            if failure is None:
                raise
            raise failure from None

    def save_resume_state(self, epoch_idx, train_data):
        """Write everything the epoch after ``epoch_idx`` depends on to the resume file, atomically."""
        state = {
            "epoch": epoch_idx,
            "finished": self.cur_step > self.stopping_step or epoch_idx + 1 >= self.epochs,
            "cur_step": self.cur_step,
            # plain floats: RecBole's metrics may be numpy scalars, which weights_only loading refuses
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": {k: float(v) for k, v in (self.best_valid_result or {}).items()},
            "train_loss_dict": {k: float(v) for k, v in self.train_loss_dict.items()},
            "state_dict": self.model.state_dict(),
            "other_parameter": to_plain(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if getattr(self, "scheduler", None) is not None else None,
            "random": random_states(train_data),
            "model": self.config["model"],
            "identity": self.run_identity,
            "fit_seconds": self.fit_seconds(),  # the run's training time so far, earlier starts' included
        }
        write_atomically(resume_file_of(self.saved_model_file), lambda tmp: torch.save(state, tmp))

    seconds_before_resume = 0.0  # training time of the earlier starts of this run (from the resume state)

    def fit_seconds(self):
        """Seconds spent in ``fit`` by this run, in this process and in the earlier starts it resumes."""
        started = getattr(self, "_fit_started", None)
        return self.seconds_before_resume + (time.time() - started if started is not None else 0.0)

    def resume_from(self, path):
        """Continue the run whose checkpoint (or resume file) is ``path`` after its last saved epoch.

        Call before :meth:`fit`; the random states are restored at the start of ``fit``.
        """
        resume_file = resume_file_of(path)
        if not resume_file.is_file():
            raise ResumeError(
                f"No resume state at {resume_file}: it is written after every evaluated epoch of a run "
                f"with saved=True; give the checkpoint (.pth) or the .resume.pth file of such a run."
            )
        try:
            state = torch.load(resume_file, map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ResumeError(f"{resume_file} is not a readable resume state ({err}).") from None
        if not isinstance(state, dict) or not {"model", "state_dict", "epoch"} <= set(state):
            raise ResumeError(f"{resume_file} is not a resume state (it holds {type(state).__name__} data): give the "
                              "checkpoint (.pth) or the .resume.pth file of the run to continue.")
        if state["model"] != self.config["model"]:
            raise ResumeError(f"{resume_file} is a {state['model']} run; this run is {self.config['model']}.")
        if state.get("identity") and self.run_identity:  # a state written before identities were kept has none
            differences = identity_differences(state["identity"], self.run_identity)
            if differences:
                raise ResumeError(f"{resume_file} is the resume state of another run ({'; '.join(differences[:4])}): "
                                  "resume with the run's own dataset and settings, or start a new run without --resume.")
        self.saved_model_file = str(checkpoint_file_of(resume_file))
        if Path(self.saved_model_file).is_file():  # the test evaluation reloads it: fail now, not after training
            try:
                load_checkpoint(self.saved_model_file, self.device, trust=self.trust_checkpoint)
            except CheckpointError as err:
                raise ResumeError(f"Cannot resume: the run's best model cannot be reloaded. {err}") from None
        state["other_parameter"] = from_plain(state["other_parameter"])
        try:
            restore_model(self.model, state, source=str(resume_file))
        except CheckpointError as err:
            raise ResumeError(f"Cannot resume: {err}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        self.train_loss_dict = state["train_loss_dict"]
        self.seconds_before_resume = float(state.get("fit_seconds", 0.0))  # a state of an older version has none
        self._resume_state = state
        self.logger.info(f"Resuming {resume_file} after epoch {state['epoch']}")
        return state

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(resume_file, self.device, trust=self.trust_checkpoint)
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
            if distributed.is_distributed(self.config):
                torch.distributed.barrier()  # the first process may still be writing the best checkpoint
            checkpoint_file = model_file or self.saved_model_file
            restore_model(self.model, load_checkpoint(checkpoint_file, self.device, trust=self.trust_checkpoint))
            self.logger.info(set_color("Loading model structure and parameters from", "blue") + f" {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def _map_reduce(self, result, num_sample):
        """Multi-process evaluation: the metrics are already over all users (GatheringCollector)."""
        if isinstance(self.eval_collector, distributed.GatheringCollector):
            return result
        return super()._map_reduce(result, num_sample)


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

"""Running, tuning and reloading models: RecBole's quick_start, with our lookups.

``recbole.quick_start`` is not imported: it imports ray at import time.
"""
import logging
import os
import sys
from logging import getLogger

from recbole.data import data_preparation
from recbole.utils import get_environment, init_logger, set_color

from recbole_micro.config import Config, config_of_checkpoint, run_identity
from recbole_micro.data.prepared import ensure_dataset_prepared
from recbole_micro.errors import DistributedError, RecBoleMicroError
from recbole_micro.files import is_writer
from recbole_micro.registry import create_dataset, get_model, get_trainer, init_seed
from recbole_micro.trainer.checkpoints import load_checkpoint
from recbole_micro.trainer.distributed import is_distributed, weights_digest, writer_first
from recbole_micro.trainer.trainer import restore_model


def metric_columns(result):
    """A finished run's metrics as flat columns: ``valid_<metric>`` and ``test_<metric>``.

    Args:
        result (dict): what :func:`~recbole_micro.quick_start.run_recbole_micro` or
            ``objective_function`` returns (``best_valid_result``, ``test_result``; either may be None).
    """
    return {
        **{f"valid_{k}": v for k, v in (result["best_valid_result"] or {}).items()},
        **{f"test_{k}": v for k, v in (result["test_result"] or {}).items()},
    }


def init_run_logger(config):
    """RecBole's ``init_logger`` for a new run, also when an earlier run in this process set one up.

    ``init_logger`` configures the root logger with ``logging.basicConfig``, which does nothing
    once the root logger has handlers: without this, every later run in the same process (a
    comparison, a tuning search) would keep writing into the first run's log file.
    """
    import colorlog

    root = logging.getLogger()
    if not is_writer(config):  # the other processes of a multi-process run: errors only, no log file
        root.setLevel(logging.ERROR)
        return
    for handler in root.handlers[:]:
        # RecBole's two handlers: its log file, and the console with colorlog's formatter
        if isinstance(handler, logging.FileHandler) or isinstance(handler.formatter, colorlog.ColoredFormatter):
            root.removeHandler(handler)
            handler.close()
    init_logger(config)


def _build_data_and_model(config):
    """Dataset, (train, valid, test) dataloaders and model for ``config``.

    In a multi-process run the first process builds first (and writes the derived feature
    files and the graph cache); the others then read them.
    """
    with writer_first(config):
        dataset = create_dataset(config)
    splits = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    with writer_first(config):
        model = get_model(config["model"])(config, splits[0]._dataset).to(config["device"])
    return dataset, splits, model


def _build(config):
    """Dataset, dataloaders, model and trainer for ``config``."""
    dataset, splits, model = _build_data_and_model(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return dataset, splits, model, trainer


def run_recbole_micro(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, resume=None,
                      started=None, trust_checkpoint=False):
    """Train ``model`` on ``dataset`` with early stopping, then evaluate the best model on test.

    Args:
        model (str): model name (ours or RecBole's).
        dataset (str): dataset name.
        config_file_list (list of str): YAML files with user settings.
        config_dict (dict): settings that override the files.
        saved (bool): save the best model and reload it for the test evaluation.
        resume (str): the checkpoint (or ``.resume.pth`` file) of an interrupted run with the same
            settings: continue it after its last evaluated epoch (see :mod:`recbole_micro.trainer.trainer`).
        started (callable): called with the run's checkpoint path once it is known, before training.
        trust_checkpoint (bool): also read a pickled (RecBole-format) best-model checkpoint when
            resuming a run that an older version started; pickles can run code.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
        ``test_result``, ``saved_model_file`` (None when ``saved`` is False), ``config`` and
        ``seconds_before_resume`` (the training time of the interrupted starts a resumed run continues).
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    ensure_dataset_prepared(config)  # before any logging: a missing dataset is one clear message
    init_seed(config["seed"], config["reproducibility"])
    init_run_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    dataset, (train_data, valid_data, test_data), model, trainer = _build(config)
    logger.info(dataset)
    logger.info(model)
    trainer.trust_checkpoint = trust_checkpoint
    if saved or resume:
        trainer.run_identity = run_identity(config)  # kept in the resume state, checked by a resume
    if resume:
        trainer.resume_from(resume)
    if started:
        started(trainer.saved_model_file)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    trained_weights = weights_digest(model) if is_distributed(config) else None  # every process must agree
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "config": config,
        "trained_weights_sha256": trained_weights,
        "seconds_before_resume": getattr(trainer, "seconds_before_resume", 0.0),
    }


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, nproc=1, world_size=-1,
        ip="localhost", port=5678, group_offset=0, resume=None, trust_checkpoint=False):
    """RecBole's ``run``: one process, or ``nproc`` processes here of a ``world_size``-process run.

    Several machines: start the same command on each, with the first machine's ``ip`` and a free
    ``port``, the same ``world_size``, and ``group_offset`` = how many processes the machines
    before this one run. Each process trains on its share of every batch; DDP averages the
    gradients. See :mod:`recbole_micro.trainer.distributed`.

    Returns:
        dict: as :func:`run_recbole_micro`, from this machine's first process; with more than one
        process, ``config`` is the settings as checked before the start, and
        ``trained_weights_sha256`` lists every local process's digest of its weights after training.
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_micro(model, dataset, config_file_list, config_dict, saved=saved, resume=resume,
                                 trust_checkpoint=trust_checkpoint)
    world_size = nproc if world_size == -1 else world_size
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    check_launch(config, nproc, world_size, group_offset, resume)
    ensure_dataset_prepared(config)
    os.makedirs(config["checkpoint_dir"], exist_ok=True)  # else every process races to create it
    launch = dict(config_dict or {}, nproc=nproc, world_size=world_size, ip=ip, port=str(port), offset=group_offset)
    results = spawn_processes(_run_process, nproc, (model, dataset, config_file_list, launch, saved, trust_checkpoint))
    result = results[min(results)]
    result["config"] = config
    result["trained_weights_sha256"] = [results[rank]["trained_weights_sha256"] for rank in sorted(results)]
    return result


def check_launch(config, nproc, world_size, group_offset, resume):
    """Refuse, with one line, a multi-process run that cannot start or would not be what was asked."""
    if nproc < 1 or world_size < nproc:
        raise DistributedError(f"--nproc is {nproc} and --world_size {world_size}: use 1 <= nproc <= world_size.")
    if not 0 <= group_offset <= world_size - nproc:
        raise DistributedError(f"--group_offset is {group_offset}: it must be in [0, world_size - nproc] = "
                               f"[0, {world_size - nproc}] (the processes the machines before this one run).")
    if resume:
        raise DistributedError("--resume works in one process only: resume the run without --nproc.")
    modes = config["eval_args"]["mode"]
    modes = modes.values() if isinstance(modes, dict) else [modes]
    if any(mode != "full" for mode in modes):
        raise DistributedError(f"eval_args.mode is {config['eval_args']['mode']}: a multi-process run "
                               "evaluates with full ranking only (mode: full).")
    import torch

    if config["use_gpu"] and torch.cuda.is_available() and torch.cuda.device_count() < nproc:
        raise DistributedError(f"--nproc is {nproc} but this machine has {torch.cuda.device_count()} GPU(s): "
                               "one process per GPU, or use_gpu: False to run on the CPU.")


def spawn_processes(target, nproc, args):
    """Start ``target(rank, *args, queue)`` in ``nproc`` processes; {rank: what each put in the queue}.

    A recbole-micro error in any process stops all of them and is raised here as that error.
    What the processes put must not hold tensors (they cross as shared memory, which is gone once
    the process has exited); metrics, strings and numpy arrays do.
    """
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    processes = mp.spawn(target, args=(*args, queue), nprocs=nproc, join=False)
    results = {}
    try:
        while not processes.join(timeout=0.5):
            drain(queue, results)  # while they run: a large result fills the pipe and would block its sender
    except Exception:  # noqa: BLE001 - a process failed; its own message is in the queue when it is ours
        errors = [r["error"] for r in drain(queue, results).values() if "error" in r]
        if errors:
            raise DistributedError(errors[0]) from None
        raise
    return drain(queue, results)


def drain(queue, results):
    """Move what is in ``queue`` into ``results`` ({rank: result}); ``results``."""
    while not queue.empty():
        rank, result = queue.get()
        results[rank] = result
    return results


def _run_process(rank, model, dataset, config_file_list, launch, saved, trust_checkpoint, queue):
    """One process of a multi-process run: train, evaluate, report to the launcher."""
    import torch.distributed as dist

    try:
        result = run_recbole_micro(model, dataset, config_file_list, dict(launch, local_rank=rank), saved=saved,
                                   trust_checkpoint=trust_checkpoint)
    except RecBoleMicroError as err:
        queue.put((rank, {"error": str(err)}))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    result.pop("config")  # the launcher returns the settings it checked
    queue.put((rank, {k: dict(v) if isinstance(v, dict) else v for k, v in result.items()}))


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """The objective for RecBole's ``HyperTuning``: one training run with these settings."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    init_run_logger(config)
    _, (train_data, valid_data, test_data), _, trainer = _build(config)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=False, saved=saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    result = {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    report_to_ray_tune(ray_tune_report(result))
    return result


def ray_tune_report(result):
    """What a trial reports to Ray Tune: ``valid_score`` (what Ray selects on), then every
    ``valid_<metric>`` and ``test_<metric>`` for reading only. Model selection never sees test."""
    return {"valid_score": result["best_valid_score"], **metric_columns(result)}


def report_to_ray_tune(metrics):
    """Report ``metrics`` to Ray Tune when called inside one of its trials (else do nothing).

    RecBole's own objective calls ``tune.report`` unconditionally and so imports ray; we only
    look for a trial when ray is already imported, which it is inside a Ray Tune worker.
    """
    if "ray" not in sys.modules:
        return
    import warnings

    from ray.air import session

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # get_trial_id warns outside a trial
        if session.get_trial_id() is None:
            return
    session.report(dict(metrics))


def load_data_and_model(model_file, trust_checkpoint=False):
    """Rebuild the dataset, dataloaders and model of a saved checkpoint, with the run's own settings.

    Args:
        model_file: a checkpoint written by a recbole-micro trainer (read without running code).
        trust_checkpoint (bool): also read a pickled checkpoint (RecBole's format), which runs
            the code it names: only for a file from a source you trust.

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    checkpoint = load_checkpoint(model_file, trust=trust_checkpoint)
    config = config_of_checkpoint(checkpoint["config"], model_file)
    init_seed(config["seed"], config["reproducibility"])
    init_run_logger(config)
    dataset, (train_data, valid_data, test_data), model = _build_data_and_model(config)
    restore_model(model, checkpoint, source=str(model_file))
    return config, model, dataset, train_data, valid_data, test_data

"""Running, tuning and reloading models: RecBole's quick_start, with our lookups.

``recbole.quick_start`` is not imported: it imports ray at import time.
"""
import logging
import sys
from logging import getLogger

from recbole.data import data_preparation
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_micro.config import Config
from recbole_micro.data.prepared import ensure_dataset_prepared
from recbole_micro.results import metric_columns
from recbole_micro.trainer import load_checkpoint, restore_model
from recbole_micro.utils import create_dataset, get_model, get_trainer


def init_run_logger(config):
    """RecBole's ``init_logger`` for a new run, also when an earlier run in this process set one up.

    ``init_logger`` configures the root logger with ``logging.basicConfig``, which does nothing
    once the root logger has handlers: without this, every later run in the same process (a
    comparison, a tuning search) would keep writing into the first run's log file.
    """
    import colorlog

    root = logging.getLogger()
    for handler in root.handlers[:]:
        # RecBole's two handlers: its log file, and the console with colorlog's formatter
        if isinstance(handler, logging.FileHandler) or isinstance(handler.formatter, colorlog.ColoredFormatter):
            root.removeHandler(handler)
            handler.close()
    init_logger(config)


def _build_data_and_model(config):
    """Dataset, (train, valid, test) dataloaders and model for ``config``."""
    dataset = create_dataset(config)
    splits = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, splits[0]._dataset).to(config["device"])
    return dataset, splits, model


def _build(config):
    """Dataset, dataloaders, model and trainer for ``config``."""
    dataset, splits, model = _build_data_and_model(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return dataset, splits, model, trainer


def run_recbole_micro(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, resume=None,
                      started=None):
    """Train ``model`` on ``dataset`` with early stopping, then evaluate the best model on test.

    Args:
        model (str): model name (ours or RecBole's).
        dataset (str): dataset name.
        config_file_list (list of str): YAML files with user settings.
        config_dict (dict): settings that override the files.
        saved (bool): save the best model and reload it for the test evaluation.
        resume (str): the checkpoint (or ``.resume.pth`` file) of an interrupted run with the same
            settings: continue it after its last evaluated epoch (see :mod:`recbole_micro.trainer`).
        started (callable): called with the run's checkpoint path once it is known, before training.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
        ``test_result``, ``saved_model_file`` (None when ``saved`` is False) and ``config``.
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
    if resume:
        trainer.resume_from(resume)
    if started:
        started(trainer.saved_model_file)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
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
    }


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


def load_data_and_model(model_file):
    """Rebuild the dataset, dataloaders and model of a saved checkpoint.

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    checkpoint = load_checkpoint(model_file)
    config = checkpoint["config"]
    # An unpickled Config skips __init__, which restores the numpy aliases (np.float, ...)
    # that RecBole 1.2.1's metrics still use: without this, evaluating in a fresh process fails.
    config.compatibility_settings()
    init_seed(config["seed"], config["reproducibility"])
    init_run_logger(config)
    dataset, (train_data, valid_data, test_data), model = _build_data_and_model(config)
    restore_model(model, checkpoint)
    return config, model, dataset, train_data, valid_data, test_data

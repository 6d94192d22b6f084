"""Mixed precision and the trainer settings RecBole reads, checked before a run trains.

RecBole's ``enable_amp`` wraps each training loss in ``torch.autocast`` (bfloat16 on CPU, float16
on CUDA) and ``enable_scaler`` adds a gradient scaler, on CUDA only. Inside our models, sparse
products run in float32 (:func:`recbole_micro.model.sparse.sparse_mm`) and MICRO's exact L_C
runs its attention products in the autocast dtype with the rest of the loss in float32
(:mod:`recbole_micro.model.losses`). Evaluation scores stay in float32: bfloat16 scores would
tie within a top-K list.
"""
from logging import getLogger

import torch

from recbole_micro.errors import SettingsError

LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam")  # RecBole's _build_optimizer


def native_bfloat16():
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def check_trainer_settings(config):
    """Refuse, in one line each, the trainer settings RecBole would silently ignore or replace here.

    - ``learner`` must be one RecBole builds (it falls back to Adam with a warning otherwise);
    - ``clip_grad_norm`` must be empty or the keyword arguments of ``clip_grad_norm_``;
    - ``enable_scaler`` needs CUDA (RecBole drops it elsewhere; bfloat16 on CPU needs no scaler).

    With ``enable_amp`` on a CPU without native bfloat16, one line in the log says that mixed
    precision is slower than float32 there.
    """
    learner = config["learner"]
    if not isinstance(learner, str) or learner.lower() not in LEARNERS:
        raise SettingsError(f"learner is {learner!r}; RecBole builds one of {', '.join(LEARNERS)} "
                            "(any other would silently become Adam).")
    clip = config["clip_grad_norm"]
    if clip and (not isinstance(clip, dict) or "max_norm" not in clip
                 or not set(clip) <= {"max_norm", "norm_type", "error_if_nonfinite", "foreach"}):
        raise SettingsError(f"clip_grad_norm is {clip!r}; give the arguments of torch's clip_grad_norm_, "
                            "e.g. clip_grad_norm: {max_norm: 5, norm_type: 2}, or leave it empty.")
    on_cuda = torch.device(config["device"]).type == "cuda"
    if config["enable_scaler"] and not on_cuda:
        raise SettingsError("enable_scaler is for float16 on CUDA, and this run is on the CPU, where enable_amp "
                            "runs bfloat16, which needs no gradient scaler: remove enable_scaler.")
    if config["enable_amp"] and not on_cuda and not native_bfloat16():
        getLogger().warning("enable_amp: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so mixed precision "
                            "runs slower than float32 here.")


def sparse_bfloat16_failure(err, config):
    """The one-line error for a RecBole model whose sparse products fail under CPU autocast, or None."""
    text = str(err)
    if config["enable_amp"] and "BFloat16" in text and ("expected scalar type" in text or "sparse" in text):
        return SettingsError(f"enable_amp: {config['model']} multiplies sparse matrices in bfloat16, which torch "
                             "cannot do on the CPU (recbole-micro's models run theirs in float32): run "
                             f"{config['model']} without enable_amp.")
    return None

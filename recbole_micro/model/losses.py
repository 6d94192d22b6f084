"""The contrastive losses: MICRO's InfoNCE over all items (Eqs. 9-10), exact, with a hand-written backward,
and the all-keys log-sum-exp of a cross-view InfoNCE such as LGMRec's (its Eq. 11, :func:`log_sum_exp_over_keys`).

Two kernels compute the same value and gradients:

- ``fused``: torch's fused attention kernels (flash attention on CPU, memory-efficient attention
  on CUDA) return log-sum-exp over all keys together with the softmax-weighted keys, without
  ever writing the (anchors x 2N) logits to memory; the anchor's own same-view column is then
  removed exactly in log space. Memory is O(N d).
- ``chunked``: the logits in anchor chunks of O(chunk x N) memory, exponentiated in place.
  It runs where no fused kernel applies (float64, a torch without the op) and for the few
  anchors whose own column holds most of the mass, where the subtraction would lose precision.

``cl_kernel: auto`` picks the fused kernel when a one-time self-check on the device and dtype
agrees with the chunked one, and says in the log which kernel runs.
"""
from logging import getLogger

import torch
import torch.nn.functional as F

from recbole_micro.model.layers import NORM_EPS, chunk_rows
from recbole_micro.model.sparse import at_least_float32

CL_KERNELS = ("auto", "fused", "chunked")
# An anchor whose own same-view term is more than this share of its full sum is computed by the
# chunked kernel: below it, removing the term by subtraction loses under 1e-6 relative in float32.
_OWN_SHARE_MAX = 0.9

# exp(x - 1/tau) of a cosine logit x = cos/tau lies in [exp(-2/tau), 1]: no overflow, and no
# underflow to 0 in float32 while 2/tau stays below this; for smaller tau the row maximum is
# subtracted instead (one more pass over the block).
_FIXED_SHIFT_MAX_RANGE = 80.0
# The exponentiated logits are kept for the backward pass when all anchors' blocks together
# have at most this many floats (512 MB of float32); above it they are recomputed there.
DEFAULT_KEEP_ELEMENTS = 1 << 27


def _exp_logits(p, keys, rows, tau, shift):
    """exp(p_r . keys_j / tau - shift_r) for the anchors ``rows``, the own column n + r zeroed.

    Returns:
        tuple: ``(block (c, 2n), shift (c, 1))``.
    """
    n = p.shape[0]
    logits = torch.mm(p[rows] * (1.0 / tau), keys.t())  # (c, 2n)
    logits[torch.arange(len(rows), device=rows.device), rows + n] = float("-inf")  # j = i, same view
    if shift is None:
        shift = logits.amax(dim=1, keepdim=True)
    logits.sub_(shift).exp_()
    return logits, shift if torch.is_tensor(shift) else logits.new_full((len(rows), 1), shift)


class _LogSumExpOverNegatives(torch.autograd.Function):
    r"""Sum over anchor rows r of :math:`\log \sum_j \exp(p_r \cdot k_j / \tau)`, j over all keys
    but r's own same-view column; exact, in row chunks, with a hand-written backward.

    The backward needs softmax(logits) per row: it is kept from the forward pass when it fits
    in ``keep_elements`` and recomputed chunk by chunk otherwise, so memory is O(chunk x N).
    Both gradients come from products with the exponentiated block scaled per row, so no
    extra pass over the block is made: d/dp_r = sum_j P_rj k_j / tau, d/dk_j = sum_r P_rj p_r / tau.
    """

    @staticmethod
    def forward(ctx, p, keys, rows, tau, step, keep_elements):
        fixed_shift = 1.0 / tau if 2.0 / tau <= _FIXED_SHIFT_MAX_RANGE else None
        keep = len(rows) * keys.shape[0] <= keep_elements
        lse, shifts, sums, kept = [], [], [], []
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            block, shift = _exp_logits(p, keys, chunk, tau, fixed_shift)
            total = block.sum(dim=1, keepdim=True)
            lse.append(shift + total.log())
            shifts.append(shift)
            sums.append(total)
            if keep:
                kept.append(block)
        ctx.save_for_backward(p, keys, rows, torch.cat(shifts), torch.cat(sums))
        ctx.tau, ctx.step, ctx.kept = tau, step, kept
        return torch.cat(lse).sum()

    @staticmethod
    def backward(ctx, grad):
        p, keys, rows, shifts, sums = ctx.saved_tensors
        tau, step = ctx.tau, ctx.step
        grad_p = torch.zeros_like(p) if ctx.needs_input_grad[0] else None
        grad_keys = torch.zeros_like(keys) if ctx.needs_input_grad[1] else None
        for number, start in enumerate(range(0, len(rows), step)):
            chunk = rows[start:start + step]
            if ctx.kept:
                block = ctx.kept[number]
            else:
                block, _ = _exp_logits(p, keys, chunk, tau, shifts[start:start + step])
            scale = grad / (tau * sums[start:start + step])  # (c, 1): softmax = block / sum
            if grad_p is not None:
                grad_p.index_add_(0, chunk, torch.mm(block, keys) * scale)
            if grad_keys is not None:
                grad_keys.addmm_(block.t(), p[chunk] * scale)
        ctx.kept = None
        return grad_p, grad_keys, None, None, None, None


def info_nce_loss(anchor, target, tau, rows=None, chunk_size=None, keep_elements=None, kernel="auto"):
    r"""Mean over anchors i of -log I(p_i, q_i), the InfoNCE term of Eqs. 9-10, exactly.

    .. math:: -\log I(p_i, q_i) = \log\big(e^{\theta(p_i, q_i)/\tau} + \sum_{j \ne i}
        e^{\theta(p_i, q_j)/\tau} + \sum_{j \ne i} e^{\theta(p_i, p_j)/\tau}\big) - \theta(p_i, q_i)/\tau

    with theta the cosine similarity: the positive pair, the cross-view and the same-view
    negatives over all items. Items 1..N-1 take part (PAD, row 0, is dropped). No N x N matrix
    is ever built, and the value and gradients are those of the formula (see the module
    docstring for the two kernels).

    Args:
        anchor (torch.Tensor): (N, d) h^m, one row per item.
        target (torch.Tensor): (N, d) h_c, the fused view.
        tau (float): temperature.
        rows (torch.LongTensor): anchor item ids, distinct and not PAD (default: all items but
            PAD). The negatives are always all items.
        chunk_size (int): anchors per chunk of the chunked kernel (default: from
            ``layers.DEFAULT_CHUNK_ELEMENTS``).
        keep_elements (int): chunked kernel: keep the exponentiated logits for the backward
            pass up to this many floats (default DEFAULT_KEEP_ELEMENTS); above it they are recomputed.
        kernel (str): ``auto`` (fused where it passes its self-check, else chunked), ``fused``
            or ``chunked``.

    Returns:
        torch.Tensor: scalar loss.
    """
    attention_dtype = mixed_precision_dtype(anchor.device)
    with torch.autocast(device_type=anchor.device.type, enabled=False):  # the loss itself is float32 (or float64)
        p = F.normalize(at_least_float32(anchor[1:]), p=2, dim=1, eps=NORM_EPS)
        q = F.normalize(at_least_float32(target[1:]), p=2, dim=1, eps=NORM_EPS)
        keys = torch.cat([q, p])  # columns: theta(p_i, q_j) for j < n, theta(p_i, p_j) for j >= n
        n = p.shape[0]
        if rows is None:  # every item an anchor: no gather (and no scatter in the backward pass)
            rows = torch.arange(n, device=p.device)
            positives = (p * q).sum() / tau  # theta(p_i, q_i) / tau
        else:
            rows = rows.to(p.device) - 1
            positives = (p.index_select(0, rows) * q.index_select(0, rows)).sum() / tau
        log_denominators = log_sum_exp_over_negatives(p, keys, rows, tau, chunk_size, keep_elements, kernel,
                                                      attention_dtype)
        return (log_denominators - positives) / len(rows)


def mixed_precision_dtype(device):
    """The low-precision dtype of an autocast region enabled on ``device``'s type here, else None."""
    device_type = torch.device(device).type
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def log_sum_exp_over_negatives(p, keys, rows, tau, chunk_size=None, keep_elements=None, kernel="auto",
                               attention_dtype=None):
    r"""Sum over anchors r of :math:`\log \sum_{j \ne n + r} \exp(p_r \cdot k_j / \tau)`: the denominators of Eq. 10.

    Args:
        p (torch.Tensor): (n, d) unit anchors-view rows (PAD dropped).
        keys (torch.Tensor): (2n, d) ``[q; p]``, so column n + r is anchor r's own same-view term.
        rows (torch.LongTensor): anchor indices into ``p``.
        attention_dtype (torch.dtype): run the fused kernel's two attention products in this
            lower precision (bfloat16 or float16, under mixed precision), the log-sum-exp, the
            own-term removal, the reductions and the loss staying in ``p``'s dtype; None: ``p``'s dtype.

    Returns:
        torch.Tensor: scalar, differentiable in ``p`` and ``keys``.
    """
    if kernel not in CL_KERNELS:
        raise ValueError(f"cl_kernel is {kernel!r}; use one of {CL_KERNELS}")
    attend = None if kernel == "chunked" else fused_attention_for(p, required=kernel == "fused",
                                                                   attention_dtype=attention_dtype)
    step = chunk_rows(len(rows), keys.shape[0], chunk_size)
    keep = DEFAULT_KEEP_ELEMENTS if keep_elements is None else keep_elements
    if attend is None:
        return _LogSumExpOverNegatives.apply(p, keys, rows, tau, step, keep)
    if len(rows) == p.shape[0]:  # distinct anchors covering every row: the fused kernel's no-gather case
        rows = torch.arange(p.shape[0], device=p.device)
    total, own_heavy = _FusedLogSumExpOverNegatives.apply(p, keys, rows, tau, attend)
    if own_heavy.any():  # the few anchors where subtracting the own term would lose precision
        total = total + _LogSumExpOverNegatives.apply(p, keys, rows[own_heavy], tau, step, keep)
    return total


# ----- the fused kernel -----
def _cpu_flash_attention(query, key, value, scale):
    """softmax(scale query key^T) value and the row log-sum-exp, by torch's CPU flash-attention kernel."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query[None, None], key[None, None], value[None, None], scale=scale
    )
    return out[0, 0], lse[0, 0]


def _cuda_efficient_attention(query, key, value, scale):
    """The same by torch's CUDA memory-efficient attention kernel.

    Head sizes are padded with zero columns to a multiple of 8 (the kernel's alignment), which
    changes no product; its lse comes padded to a multiple of 32 rows and is cut back.
    """
    d = value.shape[1]
    width = -(-d // 8) * 8
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
        _padded(query, width)[None, None], _padded(key, width)[None, None], _padded(value, width)[None, None],
        None, True, scale=scale,
    )[:2]
    return out[0, 0, :, :d], lse[0, 0, : query.shape[0]]


# The loss's own dtype is float32: float64 has no fused kernel that keeps its precision (the CPU
# one rounds to about 1e-7), and half precision is too coarse for the log-space subtraction.
# Under mixed precision only the two attention products run in bfloat16 / float16.
_FUSED_KERNELS = {
    ("cpu", torch.float32): ("CPU flash attention", _cpu_flash_attention),
    ("cuda", torch.float32): ("CUDA memory-efficient attention", _cuda_efficient_attention),
}
_LOW_PRECISION = (torch.bfloat16, torch.float16)
# Self-check tolerances, relative to the largest magnitude of each compared value: float32
# attention against the chunked float32 kernel; low-precision attention against float64.
SELF_CHECK_TOLERANCE = {None: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}
_checked = {}  # (device type, dtype, attention dtype) -> attend function or None, after the self-check


def fused_attention_for(tensor, required=False, attention_dtype=None):
    """The fused attention function for the device and dtype of ``tensor``, or None for the chunked kernel.

    The first call per (device, dtype, attention dtype) runs a self-check: the fused loss on a
    small random input must equal the chunked one in value and gradients (in float64 when the
    attention runs in low precision, within :data:`SELF_CHECK_TOLERANCE`); otherwise (or if the
    op is missing) the chunked kernel is used, in the loss's own dtype. Either outcome is logged once.

    Args:
        required (bool): raise instead of falling back (``cl_kernel: fused``).
        attention_dtype (torch.dtype): bfloat16 or float16 for the attention products, or None.
    """
    low = attention_dtype if attention_dtype in _LOW_PRECISION else None
    key = (tensor.device.type, tensor.dtype, low)
    if key not in _checked:
        name, attend = _FUSED_KERNELS.get(key[:2], (None, None))
        if attend is not None and low is not None:
            attend, name = _in_precision(attend, low), f"{name}, {str(low).replace('torch.', '')} products"
        reason = "no fused kernel for this device and dtype" if attend is None else _self_check(attend, *key)
        logger = getLogger()
        if reason is None:
            logger.info(f"Contrastive loss: fused kernel ({name}) on {key[0]} {key[1]}")
            _checked[key] = attend
        else:
            logger.info(f"Contrastive loss: chunked kernel on {key[0]} {key[1]} ({reason})")
            _checked[key] = None
    if required and _checked[key] is None:
        raise ValueError(
            f"cl_kernel is 'fused', but no fused kernel works on {key[0]} {key[1]}; "
            "use cl_kernel: auto (falls back to the chunked kernel) or chunked."
        )
    return _checked[key]


def _in_precision(attend, dtype):
    """``attend`` with its query, keys and values in ``dtype``; output and log-sum-exp back in float32."""

    def attend_low(query, key, value, scale):
        out, lse = attend(query.to(dtype), key.to(dtype), value.to(dtype), scale)
        return out.float(), lse.float()

    attend_low.low_precision = dtype
    return attend_low


def _self_check(attend, device, dtype, low=None, n=61, d=8, tau=0.3):
    """None if the fused loss equals the chunked one on a small random input, else the reason.

    With low-precision attention (``low``) the reference is the chunked kernel in float64.
    """
    generator = torch.Generator().manual_seed(0)
    values = [torch.randn(n, d, generator=generator) for _ in range(2)]
    try:
        results = []
        for use_fused in (True, False):
            reference_dtype = torch.float64 if low is not None and not use_fused else dtype
            inputs = [v.to(device=device, dtype=reference_dtype).requires_grad_() for v in values]
            p = F.normalize(inputs[0][1:], dim=1)
            keys = torch.cat([F.normalize(inputs[1][1:], dim=1), p])
            rows = torch.arange(n - 1, device=device)
            if use_fused:
                value, _ = _FusedLogSumExpOverNegatives.apply(p, keys, rows, tau, attend)
            else:
                value = _LogSumExpOverNegatives.apply(p, keys, rows, tau, n, 0)
            results.append([value, *torch.autograd.grad(value, inputs)])
    except (RuntimeError, NotImplementedError, AttributeError) as err:
        return f"the fused kernel failed: {str(err).splitlines()[0]}"
    tolerance = SELF_CHECK_TOLERANCE[low]
    for got, want in zip(*results):
        got, want = got.detach().double(), want.detach().double()
        if not torch.allclose(got, want, rtol=tolerance, atol=tolerance * float(want.abs().max())):
            return "the fused kernel disagreed with the chunked one in its self-check"
    return None


def _rows_of(x, rows):
    """``x[rows]``, without a copy when ``rows`` are all of x's rows in order (every item an anchor)."""
    return x if len(rows) == x.shape[0] else x.index_select(0, rows)


def _padded(x, width):
    """``x`` with zero columns appended up to ``width`` (fused kernels need equal head sizes)."""
    return F.pad(x, (0, width - x.shape[1])) if width > x.shape[1] else x


class _FusedLogSumExpOverNegatives(torch.autograd.Function):
    r"""Sum over anchors r of log(S_r - E_r), S_r = sum_j exp(a_r . k_j / tau) over all 2n keys and
    E_r = exp(a_r . k_{n+r} / tau) the own same-view term, by two fused attention calls.

    Forward: one call with query a_r, keys and values k_j, scale 1/tau gives lse_r = log S_r and
    o_r = sum_j P_rj k_j (P = softmax over all keys); then log(S_r - E_r) = lse_r + log(1 - e^{x_r}),
    x_r = log E_r - lse_r. Anchors with e^{x_r} > _OWN_SHARE_MAX are left out and flagged.

    Backward, with w_r = S_r / (S_r - E_r):
    d/da_r = (w_r o_r - (w_r - 1) k_{n+r}) / tau and
    d/dk_j = sum_r w_r P_rj a_r / tau - [j = n + r] (w_r - 1) a_r / tau.
    The sum over anchors is a second call with the roles swapped: queries [k_j, 1], keys
    [a_r / tau, log w_r - lse_r] and values a_r at scale 1, whose softmax output times
    exp(its lse) is sum_r w_r P_rj a_r.

    Returns:
        tuple: ``(scalar sum over the kept anchors, bool mask of the flagged anchors)``.
    """

    @staticmethod
    def forward(ctx, p, keys, rows, tau, attend):
        n, d = p.shape
        anchors = _rows_of(p, rows)
        out, lse = attend(anchors, keys, keys, 1.0 / tau)
        own = (anchors * _rows_of(keys[n:], rows)).sum(dim=1) / tau  # log E_r
        own_share = torch.exp(own - lse)
        own_heavy = own_share > _OWN_SHARE_MAX
        kept = ~own_heavy
        share = own_share.clamp(max=_OWN_SHARE_MAX)  # E_r / S_r, finite below for the flagged anchors too
        log_denominators = lse + torch.log1p(-share)  # log(S_r - E_r)
        weight = torch.where(kept, 1.0 / (1.0 - share), torch.zeros_like(share))
        ctx.save_for_backward(p, keys, rows, out, lse, weight)
        ctx.tau, ctx.attend = tau, attend
        ctx.mark_non_differentiable(own_heavy)
        return (log_denominators * kept).sum(), own_heavy

    @staticmethod
    def backward(ctx, grad, _):
        p, keys, rows, out, lse, weight = ctx.saved_tensors
        tau, attend = ctx.tau, ctx.attend
        n = p.shape[0]
        anchors = _rows_of(p, rows)
        scale = grad / tau
        extra = torch.where(weight > 0, weight - 1.0, weight)  # w_r - 1, and 0 for the anchors left out
        grad_p = grad_keys = None
        if ctx.needs_input_grad[0]:
            grad_anchors = (weight.unsqueeze(1) * out - extra.unsqueeze(1) * _rows_of(keys[n:], rows)) * scale
            grad_p = grad_anchors if len(rows) == n else torch.zeros_like(p).index_add_(0, rows, grad_anchors)
        if ctx.needs_input_grad[1]:
            kept = weight > 0
            exponent = torch.where(kept, weight.clamp(min=1e-30).log() - lse, torch.zeros_like(lse))  # log w_r - lse_r
            grad_keys = _weighted_anchor_sums(attend, keys, anchors, exponent, tau, kept) * scale
            if len(rows) == n:  # own columns n..2n-1 in order
                grad_keys[n:].sub_(extra.unsqueeze(1) * anchors * scale)
            else:
                grad_keys.index_add_(0, n + rows, -extra.unsqueeze(1) * anchors * scale)
        return grad_p, grad_keys, None, None, None


def _weighted_anchor_sums(attend, keys, anchors, exponent, tau, kept=None):
    r"""For every key j, :math:`\sum_r [kept_r]\, e^{k_j \cdot a_r / \tau + c_r} a_r` (c the ``exponent``), by one fused call.

    The roles of the forward call swapped: queries [k_j, 1], keys [a_r / tau, c_r] and values a_r
    at scale 1, whose softmax output times exp(its lse) is the sum. Anchors left out get a key
    bias of -1e4 (exp() makes their weight exactly 0, with no -inf). Low precision cannot hold
    c_r as a key column (bf16 keeps 3 significant digits), so there it scales the values
    instead, around its mean, and the output is scaled back by exp(swapped lse + mean).

    Returns:
        torch.Tensor: (len(keys), d).
    """
    d = anchors.shape[1]
    if getattr(attend, "low_precision", None) is not None:
        kept = torch.ones_like(exponent, dtype=torch.bool) if kept is None else kept
        shift = exponent[kept].mean() if bool(kept.any()) else exponent.new_zeros(())
        value = anchors * torch.where(kept, (exponent - shift).exp(), torch.zeros_like(exponent)).unsqueeze(1)
        swapped, swapped_lse = attend(keys, anchors / tau, value, 1.0)
        return swapped * (swapped_lse + shift).exp().unsqueeze(1)
    bias = exponent if kept is None else torch.where(kept, exponent, torch.full_like(exponent, -1e4))
    query = torch.cat([keys, torch.ones_like(keys[:, :1])], dim=1)  # (K, d + 1)
    key = torch.cat([anchors / tau, bias.unsqueeze(1)], dim=1)  # (R, d + 1)
    value = _padded(anchors, d + 1)  # equal head sizes; the zero column is dropped below
    swapped, swapped_lse = attend(query, key, value, 1.0)
    return swapped[:, :d] * swapped_lse.exp().unsqueeze(1)


class _FusedLogSumExpOverKeys(torch.autograd.Function):
    r"""Sum over anchors r of :math:`\log \sum_j \exp(a_r \cdot k_j / \tau)`, every key a negative, by fused attention.

    Forward: one call with query a_r, keys and values k_j, scale 1/tau gives lse_r and
    o_r = sum_j P_rj k_j. Backward: d/da_r = o_r / tau, d/dk_j = sum_r P_rj a_r / tau
    (:func:`_weighted_anchor_sums` with c_r = -lse_r).
    """

    @staticmethod
    def forward(ctx, anchors, keys, tau, attend):
        out, lse = attend(anchors, keys, keys, 1.0 / tau)
        ctx.save_for_backward(anchors, keys, out, lse)
        ctx.tau, ctx.attend = tau, attend
        return lse.sum()

    @staticmethod
    def backward(ctx, grad):
        anchors, keys, out, lse = ctx.saved_tensors
        scale = grad / ctx.tau
        grad_anchors = out * scale if ctx.needs_input_grad[0] else None
        grad_keys = None
        if ctx.needs_input_grad[1]:
            grad_keys = _weighted_anchor_sums(ctx.attend, keys, anchors, -lse, ctx.tau) * scale
        return grad_anchors, grad_keys, None, None


def log_sum_exp_over_keys(anchors, keys, tau):
    r"""Sum over anchors r of :math:`\log \sum_j \exp(a_r \cdot k_j / \tau)`: InfoNCE denominators whose negatives are all keys.

    By fused attention where :func:`fused_attention_for` finds a working kernel for ``anchors``'
    device and dtype (float32 on CPU and CUDA), with no (R, K) logits in memory; else by
    ``logsumexp`` over the logits. Both give the formula's value and gradients.

    Args:
        anchors (torch.Tensor): (R, d) rows (repeats allowed), unit length for cosine logits.
        keys (torch.Tensor): (K, d).
        tau (float): temperature.

    Returns:
        torch.Tensor: scalar, differentiable in ``anchors`` and ``keys``.
    """
    attend = fused_attention_for(anchors)
    if attend is None:
        return torch.logsumexp(anchors @ keys.t() / tau, dim=1).sum()
    return _FusedLogSumExpOverKeys.apply(anchors, keys, tau, attend)

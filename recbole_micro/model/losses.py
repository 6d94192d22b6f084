"""The contrastive loss of MICRO: InfoNCE over all items (Eqs. 9-10), exact, in anchor chunks, with a hand-written backward."""
import torch
import torch.nn.functional as F

from recbole_micro.model.layers import NORM_EPS, chunk_rows

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


def info_nce_loss(anchor, target, tau, rows=None, chunk_size=None, keep_elements=None):
    r"""Mean over anchors i of -log I(p_i, q_i), the InfoNCE term of Eqs. 9-10, exactly.

    .. math:: -\log I(p_i, q_i) = \log\big(e^{\theta(p_i, q_i)/\tau} + \sum_{j \ne i}
        e^{\theta(p_i, q_j)/\tau} + \sum_{j \ne i} e^{\theta(p_i, p_j)/\tau}\big) - \theta(p_i, q_i)/\tau

    with theta the cosine similarity: the positive pair, the cross-view and the same-view
    negatives over all items. Items 1..N-1 take part (PAD, row 0, is dropped). The anchors are
    processed in row chunks of at most ``layers.DEFAULT_CHUNK_ELEMENTS`` floats, with a hand-written
    backward (see :class:`_LogSumExpOverNegatives`), so no N x N matrix is ever built and the
    value and gradients are the unchunked ones.

    Args:
        anchor (torch.Tensor): (N, d) h^m, one row per item.
        target (torch.Tensor): (N, d) h_c, the fused view.
        tau (float): temperature.
        rows (torch.LongTensor): anchor item ids, distinct and not PAD (default: all items but
            PAD). The negatives are always all items.
        chunk_size (int): anchors per chunk (default: from ``layers.DEFAULT_CHUNK_ELEMENTS``).
        keep_elements (int): keep the exponentiated logits for the backward pass up to this
            many floats (default DEFAULT_KEEP_ELEMENTS); above it they are recomputed.

    Returns:
        torch.Tensor: scalar loss.
    """
    p = F.normalize(anchor[1:], p=2, dim=1, eps=NORM_EPS)
    q = F.normalize(target[1:], p=2, dim=1, eps=NORM_EPS)
    keys = torch.cat([q, p])  # columns: theta(p_i, q_j) for j < n, theta(p_i, p_j) for j >= n
    n = p.shape[0]
    rows = torch.arange(n, device=p.device) if rows is None else rows.to(p.device) - 1
    step = chunk_rows(len(rows), 2 * n, chunk_size)
    keep = DEFAULT_KEEP_ELEMENTS if keep_elements is None else keep_elements
    log_denominators = _LogSumExpOverNegatives.apply(p, keys, rows, tau, step, keep)
    positives = (p[rows] * q[rows]).sum() / tau  # theta(p_i, q_i) / tau
    return (log_denominators - positives) / len(rows)

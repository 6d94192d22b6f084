"""The contrastive loss (Eqs. 9-10) against a term-by-term evaluation and a dense autograd reference."""
import math

import numpy as np
import pytest
import torch

from recbole_micro.model.losses import info_nce_loss


def eq10_directly(h_m, h_c, tau):
    """Eqs. 9-10 for one modality, written term by term (items 1..N-1; row 0 is PAD)."""
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    items = range(1, len(h_m))
    total = 0.0
    for i in items:
        positive = math.exp(cos(h_m[i], h_c[i]) / tau)
        negatives = sum(math.exp(cos(h_m[i], h_c[j]) / tau) + math.exp(cos(h_m[i], h_m[j]) / tau) for j in items if j != i)
        total += -math.log(positive / (positive + negatives))
    return total / len(items)


def test_contrastive_loss_is_eq10_on_a_4_item_example():
    h_m = np.array([[0.0, 0], [1, 0], [0.6, 0.8], [0, 1], [-1, 0.2]])
    h_c = np.array([[0.0, 0], [0.9, 0.1], [0.5, 0.9], [-0.2, 1], [-1, -0.3]])
    expected = eq10_directly(h_m, h_c, tau=0.5)
    value = info_nce_loss(torch.tensor(h_m), torch.tensor(h_c), tau=0.5)
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_chunked_contrastive_loss_equals_unchunked_value_and_gradient(chunk_size):
    torch.manual_seed(2)
    h_m = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    h_c = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    full = info_nce_loss(h_m, h_c, tau=0.2)
    full.backward()
    grads = h_m.grad.clone(), h_c.grad.clone()
    h_m.grad = h_c.grad = None
    chunked = info_nce_loss(h_m, h_c, tau=0.2, chunk_size=chunk_size)
    chunked.backward()
    assert chunked.item() == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(h_m.grad, grads[0])
    torch.testing.assert_close(h_c.grad, grads[1])
    assert h_m.grad[0].abs().sum() == 0  # PAD takes no part


def info_nce_dense_reference(h_m, h_c, tau, rows=None):
    """Eq. 10 with plain autograd on the full (N-1) x 2(N-1) logits: for small N only."""
    p = torch.nn.functional.normalize(h_m[1:], dim=1)
    q = torch.nn.functional.normalize(h_c[1:], dim=1)
    n = p.shape[0]
    rows = torch.arange(n) if rows is None else rows - 1
    logits = p[rows] @ torch.cat([q, p]).t() / tau
    own = torch.zeros_like(logits, dtype=torch.bool)
    own[torch.arange(len(rows)), rows + n] = True
    logits = logits.masked_fill(own, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(len(rows)), rows]).mean()


@pytest.mark.parametrize(
    "tau, chunk_size, keep_elements, rows",
    [
        (0.5, None, None, None),  # one chunk, exponentiated logits kept for the backward pass
        (0.5, 7, 0, None),  # chunks, recomputed in the backward pass
        (0.2, 5, None, [3, 1, 17, 30, 8]),  # a subset of anchors (the batch-anchor mode)
        (0.01, 6, 0, None),  # tau so small that the row maximum is subtracted instead of 1/tau
    ],
)
def test_contrastive_loss_value_and_gradients_equal_a_dense_autograd_reference(tau, chunk_size, keep_elements, rows):
    torch.manual_seed(3)
    h_m = torch.randn(31, 6, dtype=torch.float64, requires_grad=True)
    h_c = torch.randn(31, 6, dtype=torch.float64, requires_grad=True)
    rows = None if rows is None else torch.tensor(rows)
    value = info_nce_loss(h_m, h_c, tau, rows=rows, chunk_size=chunk_size, keep_elements=keep_elements)
    grads = torch.autograd.grad(value, (h_m, h_c))
    expected = info_nce_dense_reference(h_m, h_c, tau, rows=rows)
    expected_grads = torch.autograd.grad(expected, (h_m, h_c))
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)

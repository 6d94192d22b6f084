"""The contrastive loss (Eqs. 9-10): both kernels against a term-by-term evaluation, float64 and dense autograd."""
import logging
import math

import numpy as np
import pytest
import torch

from recbole_micro.model import losses
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


# ----- the fused kernel: same value and gradients as the chunked one and as float64 -----
def value_and_grads(h_m, h_c, tau, rows=None, dtype=torch.float32, **kwargs):
    a = h_m.detach().to(dtype).clone().requires_grad_()
    c = h_c.detach().to(dtype).clone().requires_grad_()
    value = info_nce_loss(a, c, tau, rows=rows, **kwargs)
    return [t.double() for t in (value, *torch.autograd.grad(value, (a, c)))]


def assert_close_relative(got, want, rel):
    got, want = got.detach(), want.detach()
    assert float((got - want).abs().max()) <= rel * float(want.abs().max()), float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("n_items, dim, tau, n_anchors, pad", [
    (31, 6, 0.5, None, "zero"),
    (31, 6, 0.05, 9, "random"),  # a subset of anchors; PAD carries a (meaningless) non-zero row
    (200, 16, 0.2, None, "random"),
    (200, 16, 1.0, 57, "zero"),
    (7051, 64, 0.5, None, "zero"),  # the Baby item count
    (7051, 64, 0.2, 840, "zero"),  # a batch's distinct positive items (cl_anchors: batch)
])
def test_fused_kernel_equals_chunked_and_float64(n_items, dim, tau, n_anchors, pad):
    generator = torch.Generator().manual_seed(n_items + dim)
    h_m = torch.randn(n_items, dim, generator=generator)
    h_c = torch.randn(n_items, dim, generator=generator)
    if pad == "zero":
        h_m[0] = h_c[0] = 0
    rows = None if n_anchors is None else torch.randperm(n_items - 1, generator=generator)[:n_anchors] + 1
    fused = value_and_grads(h_m, h_c, tau, rows, kernel="fused")
    chunked = value_and_grads(h_m, h_c, tau, rows, kernel="chunked")
    reference = value_and_grads(h_m, h_c, tau, rows, dtype=torch.float64, kernel="chunked")  # exact in float64
    if n_items <= 200:  # and the float64 reference equals plain autograd on the dense logits
        dense = [h_m.double().requires_grad_(), h_c.double().requires_grad_()]
        value = info_nce_dense_reference(*dense, tau, rows=rows)
        for got, want in zip(reference, [value, *torch.autograd.grad(value, dense)]):
            torch.testing.assert_close(got, want.double(), rtol=1e-10, atol=1e-12)
    for got, want in zip(fused, reference):
        assert_close_relative(got, want, 1e-5)
    for got, want in zip(fused, chunked):
        assert_close_relative(got, want, 1e-5)
    assert fused[1][0].abs().sum() == 0 and fused[2][0].abs().sum() == 0  # PAD takes no part


def test_own_column_is_removed_exactly_on_a_3_item_case():
    # items 1..3 (row 0 is PAD); anchor 1's own term e^{1/tau} is removed, all else is kept
    h_m = np.array([[0.0, 0], [1, 0], [0, 1], [-1, 0]])
    h_c = np.array([[0.0, 0], [1, 0], [1, 1], [0, -1]])
    tau = 0.5
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    # by hand, anchor 1 = (1, 0): positive cos 1, cross-view cos(h_c2) = 1/sqrt(2), cos(h_c3) = 0,
    # same-view cos(h_m2) = 0, cos(h_m3) = -1; its own same-view column (cos 1) is not a term
    anchor_1 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2 / math.sqrt(2)) + 1 + 1 + math.exp(-2)))
    assert anchor_1 == pytest.approx(-math.log(math.exp(cos(h_m[1], h_c[1]) / tau) / sum(
        math.exp(cos(h_m[1], v) / tau) for v in (h_c[1], h_c[2], h_c[3], h_m[2], h_m[3]))), rel=1e-12)
    expected = eq10_directly(h_m, h_c, tau)
    for kernel in ("fused", "chunked"):
        value = info_nce_loss(torch.tensor(h_m, dtype=torch.float32), torch.tensor(h_c, dtype=torch.float32), tau,
                              kernel=kernel)
        assert value.item() == pytest.approx(expected, rel=1e-6)
    only_1 = info_nce_loss(torch.tensor(h_m, dtype=torch.float32), torch.tensor(h_c, dtype=torch.float32), tau,
                           rows=torch.tensor([1]), kernel="fused")
    assert only_1.item() == pytest.approx(anchor_1, rel=1e-6)


def test_anchors_dominated_by_their_own_term_go_to_the_chunked_kernel():
    # tau = 0.02: every anchor's own term e^{50} outweighs all others, so subtracting it in
    # float32 would lose everything; those anchors are flagged and computed exactly instead
    h_m = torch.tensor([[0.0, 0], [1, 0], [0, 1], [-1, 0.1]])
    h_c = torch.tensor([[0.0, 0], [1, 1], [0.4, 1], [-1, -1]])
    p = torch.nn.functional.normalize(h_m[1:], dim=1)
    keys = torch.cat([torch.nn.functional.normalize(h_c[1:], dim=1), p])
    attend = losses.fused_attention_for(p)
    assert attend is not None
    _, own_heavy = losses._FusedLogSumExpOverNegatives.apply(p, keys, torch.arange(3), 0.02, attend)
    assert own_heavy.tolist() == [True, True, True]
    _, own_heavy = losses._FusedLogSumExpOverNegatives.apply(p, keys, torch.arange(3), 0.5, attend)
    assert own_heavy.tolist() == [False, False, False]
    fused = value_and_grads(h_m, h_c, 0.02, kernel="fused")
    chunked = value_and_grads(h_m, h_c, 0.02, kernel="chunked")
    for got, want in zip(fused, chunked):  # every anchor went through the same chunked code
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the loss is a difference of two logs near 50: float32 holds it to about 50 * 6e-8 absolute
    assert fused[0].item() == pytest.approx(eq10_directly(h_m.double().numpy(), h_c.double().numpy(), 0.02), abs=1e-5)


@pytest.fixture
def fresh_kernel_choice(monkeypatch):
    """Forget which kernel each device was given, so the self-check runs again."""
    monkeypatch.setattr(losses, "_checked", {})
    return monkeypatch


def test_kernel_choice_falls_back_to_chunked_when_the_fused_kernel_fails_or_disagrees(fresh_kernel_choice, caplog):
    def broken(query, key, value, scale):
        raise RuntimeError("no such kernel on this build")

    def wrong(query, key, value, scale):
        out, lse = losses._cpu_flash_attention(query, key, value, scale)
        return out, lse + 0.1

    x = torch.randn(5, 3)
    for attend, reason in ((broken, "failed: no such kernel"), (wrong, "disagreed")):
        fresh_kernel_choice.setattr(losses, "_checked", {})
        fresh_kernel_choice.setattr(losses, "_FUSED_KERNELS", {("cpu", torch.float32): ("test kernel", attend)})
        with caplog.at_level(logging.INFO):
            assert losses.fused_attention_for(x) is None
        assert "chunked kernel on cpu torch.float32" in caplog.text and reason in caplog.text
        with pytest.raises(ValueError, match="cl_kernel is 'fused'"):
            losses.fused_attention_for(x, required=True)
        # auto still gives the exact loss, through the chunked kernel
        h_m, h_c = torch.randn(12, 4), torch.randn(12, 4)
        assert info_nce_loss(h_m, h_c, 0.5).item() == pytest.approx(info_nce_loss(h_m, h_c, 0.5, kernel="chunked").item())
        caplog.clear()


def test_kernel_choice_is_fused_on_cpu_float32_chunked_for_float64_and_logged_once(fresh_kernel_choice, caplog):
    with caplog.at_level(logging.INFO):
        assert losses.fused_attention_for(torch.zeros(2, 2)) is losses._cpu_flash_attention
        assert losses.fused_attention_for(torch.zeros(3, 3)) is losses._cpu_flash_attention
        assert losses.fused_attention_for(torch.zeros(2, 2, dtype=torch.float64)) is None
    lines = [r.getMessage() for r in caplog.records if "Contrastive loss" in r.getMessage()]
    assert lines == ["Contrastive loss: fused kernel (CPU flash attention) on cpu torch.float32",
                     "Contrastive loss: chunked kernel on cpu torch.float64 (no fused kernel for this device and dtype)"]
    with pytest.raises(ValueError, match="cl_kernel is 'fast'"):
        info_nce_loss(torch.randn(4, 2), torch.randn(4, 2), 0.5, kernel="fast")

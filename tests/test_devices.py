"""The device-sensitive computations on every device there is: the same numbers as on the CPU.

On a machine without a GPU only the ``cpu`` cases run; ``benchmarks/gpu_check.sh`` runs the
``cuda`` ones (``pytest -m cuda``).
"""
import pytest
import torch
from helpers import device_params

from recbole_micro.model import losses
from recbole_micro.model.layers import knn_graph, propagate, symmetric_normalize
from recbole_micro.model.losses import info_nce_loss


@pytest.mark.parametrize("device", device_params())
def test_knn_graph_and_propagation_match_the_cpu(device):
    generator = torch.Generator().manual_seed(0)
    feat = torch.randn(300, 16, generator=generator)
    embedding = torch.randn(300, 8, generator=generator)
    expected = symmetric_normalize(knn_graph(feat, 5))
    graph = symmetric_normalize(knn_graph(feat.to(device), 5))
    assert graph.idx.device.type == device
    assert torch.equal(graph.idx.cpu().sort(dim=1).values, expected.idx.sort(dim=1).values)
    torch.testing.assert_close(graph.val.cpu().sort(dim=1).values, expected.val.sort(dim=1).values)
    x = embedding.to(device).requires_grad_()
    out = propagate(graph, x, 2)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
    x_cpu = embedding.clone().requires_grad_()
    out_cpu = propagate(expected, x_cpu, 2)
    (grad_cpu,) = torch.autograd.grad(out_cpu.pow(2).sum(), x_cpu)
    torch.testing.assert_close(out.cpu(), out_cpu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.cpu(), grad_cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("kernel", ["auto", "chunked"])
@pytest.mark.parametrize("n_anchors", [None, 300])
def test_contrastive_loss_matches_float64_on_the_cpu(device, kernel, n_anchors):
    generator = torch.Generator().manual_seed(1)
    h_m, h_c = torch.randn(2001, 64, generator=generator), torch.randn(2001, 64, generator=generator)
    rows = None if n_anchors is None else torch.randperm(2000, generator=generator)[:n_anchors] + 1
    results = []
    for dev, dtype, kern in ((device, torch.float32, kernel), ("cpu", torch.float64, "chunked")):
        a = h_m.to(dev, dtype).requires_grad_()
        c = h_c.to(dev, dtype).requires_grad_()
        value = info_nce_loss(a, c, 0.5, rows=None if rows is None else rows.to(dev), kernel=kern)
        results.append([t.detach().cpu().double() for t in (value, *torch.autograd.grad(value, (a, c)))])
    for got, want in zip(*results):
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    if kernel == "auto":  # and on this device the fused kernel passed its self-check
        assert losses.fused_attention_for(h_m.to(device)) is not None


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("model", ["MICRO", "LATTICE"])
def test_one_epoch_on_the_device_gives_the_cpu_losses(tiny, device, model):
    from recbole_micro.config import Config
    from recbole_micro.quick_start import _build_data_and_model

    first_losses = {}
    for dev in ("cpu", device):
        config = Config(model=model, dataset="tiny", config_dict=tiny.config_dict(use_gpu=dev == "cuda"))
        _, splits, model_obj = _build_data_and_model(config)
        assert model_obj.device.type == dev and next(model_obj.parameters()).device.type == dev
        batch = next(iter(splits[0])).to(model_obj.device)
        first_losses[dev] = [loss.item() for loss in model_obj.calculate_loss(batch)]
    assert first_losses[device] == pytest.approx(first_losses["cpu"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("model", ["MICRO", "LATTICE"])
def test_mixed_precision_on_the_device_trains_and_stays_near_float32(tiny, device, model):
    """RecBole's enable_amp: bfloat16 autocast on the CPU, float16 with its gradient scaler on CUDA."""
    from recbole_micro.config import Config
    from recbole_micro.quick_start import _build_data_and_model, run_recbole_micro

    on_cuda = device == "cuda"
    config = Config(model=model, dataset="tiny", config_dict=tiny.config_dict(use_gpu=on_cuda))
    _, splits, model_obj = _build_data_and_model(config)
    batch = next(iter(splits[0])).to(model_obj.device)
    full = [loss.item() for loss in model_obj.calculate_loss(batch)]
    with torch.autocast(device_type=device, dtype=torch.float16 if on_cuda else torch.bfloat16):
        low = [loss.item() for loss in model_obj.calculate_loss(batch)]
    assert low == pytest.approx(full, rel=3e-2, abs=1e-3)
    result = run_recbole_micro(model=model, dataset="tiny", config_dict=tiny.config_dict(
        use_gpu=on_cuda, epochs=2, enable_amp=True, enable_scaler=on_cuda))
    assert 0.0 < result["test_result"]["recall@20"] <= 1.0

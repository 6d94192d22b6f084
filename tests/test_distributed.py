"""Multi-process training with RecBole's DDP, on 2 CPU processes (gloo)."""
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from helpers import build, run_script
from recbole.data.interaction import Interaction

from recbole_micro.config import Config
from recbole_micro.errors import DistributedError
from recbole_micro.quick_start import load_data_and_model, run, spawn_processes
from recbole_micro.registry import get_model
from recbole_micro.trainer.distributed import GatheringCollector
from recbole_micro.trainer.trainer import Trainer


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("model", ["MICRO", "LightGCN"])
def test_two_processes_train_identical_weights_and_evaluate_every_user(tiny, model):
    result = run(model=model, dataset="tiny", config_dict=tiny.config_dict(epochs=2), nproc=2, port=free_port())
    digests = result["trained_weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]  # DDP kept the two processes' weights identical
    saved = sorted(p.name for p in (tiny.root / "saved").glob("*.pth"))
    assert saved == [result["saved_model_file"].rsplit("/", 1)[-1]]  # one checkpoint, no resume state
    assert len(list((tiny.root / "log").rglob("*.log"))) == 1  # one log
    config, trained, _, _, valid, test = load_data_and_model(result["saved_model_file"])
    single = Trainer(config, trained)  # one process, all users
    assert dict(single.evaluate(test, load_best_model=False)) == dict(result["test_result"])
    assert dict(single.evaluate(valid, load_best_model=False)) == dict(result["best_valid_result"])


def _half_batch_gradients(rank, settings, batch, queue):
    """One process of the gradient check: its half of ``batch``, RecBole's DDP step, the gradients."""
    config = Config(model="MICRO", dataset="tiny", config_dict=dict(settings, local_rank=rank))
    _, _, (train, _, _) = build_from(config)
    torch.manual_seed(0)
    model = get_model("MICRO")(config, train._dataset)
    trainer = Trainer(config, model)
    half = Interaction({k: v[rank::2] for k, v in batch.items()})
    trainer.set_reduce_hook()
    loss = sum(model.calculate_loss(half)) + trainer.sync_grad_loss()
    loss.backward()
    # numpy, not tensors: a tensor crosses the queue as shared memory, gone once this process exits
    queue.put((rank, {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}))
    dist.destroy_process_group()


def build_from(config):
    """As ``helpers.build``, from a Config (the split is seeded, so every process splits alike)."""
    from recbole.data import data_preparation

    from recbole_micro.registry import create_dataset, init_seed

    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


def test_two_half_batches_give_the_full_batch_gradient_so_the_all_item_loss_counts_once(tiny):
    """Every process computes L_C over all items; DDP averages, so it counts once, as BPR does."""
    settings = tiny.config_dict(nproc=2, world_size=2, ip="localhost", port=str(free_port()), offset=0)
    generator = torch.Generator().manual_seed(3)
    batch = {"user_id": torch.randint(1, 41, (16,), generator=generator),
             "item_id": torch.randint(1, 31, (16,), generator=generator),
             "neg_item_id": torch.randint(1, 31, (16,), generator=generator)}
    grads = spawn_processes(_half_batch_gradients, 2, (settings, batch))
    config, _, (train, _, _) = build("MICRO", tiny)
    torch.manual_seed(0)
    model = get_model("MICRO")(config, train._dataset)
    sum(model.calculate_loss(Interaction(batch))).backward()
    full = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(full) == set(grads[0]) == set(grads[1])
    for name, grad in full.items():
        torch.testing.assert_close(torch.from_numpy(grads[0][name]), grad, rtol=1e-5, atol=1e-7, msg=name)
        assert (grads[0][name] == grads[1][name]).all()  # DDP gave both processes the same average


def test_gathering_collector_keeps_each_user_once_in_user_order(tiny):
    config = Config(model="BPR", dataset="tiny", config_dict=tiny.config_dict(topk=[2], metrics=["Recall"],
                                                                            valid_metric="Recall@2"))
    dist.init_process_group("gloo", init_method=f"tcp://localhost:{free_port()}", rank=0, world_size=1,
                            timeout=timedelta(seconds=60))
    try:
        collector = GatheringCollector(config)
        scores = torch.tensor([[0.0, 3.0, 1.0, 2.0], [0.0, 1.0, 3.0, 2.0], [0.0, 3.0, 1.0, 2.0]])
        # users 7, 2, 7: the last row is the repeat DistributedSampler pads a share with.
        # User 7's top 2 are items 1, 3 and it liked item 1; user 2's are 2, 3 and it liked 3.
        collector.eval_batch_collect(scores, Interaction({"user_id": torch.tensor([7, 2, 7])}),
                                     torch.tensor([0, 1, 2]), torch.tensor([1, 3, 1]))
        struct = collector.get_data_struct()
    finally:
        dist.destroy_process_group()
    # one row per user, in user-id order: (hit at rank 1, hit at rank 2, number of positives)
    assert struct["rec.topk"].tolist() == [[0, 1, 1], [1, 0, 1]]


@pytest.mark.parametrize("kwargs, message", [
    ({"nproc": 0}, "1 <= nproc <= world_size"),
    ({"nproc": 3, "world_size": 2}, "1 <= nproc <= world_size"),
    ({"nproc": 2, "world_size": 4, "group_offset": 3}, r"\[0, 2\]"),
    ({"nproc": 2, "resume": "saved/x.pth"}, "--resume works in one process only"),
])
def test_launches_that_cannot_work_are_refused_before_any_process_starts(tiny, kwargs, message):
    with pytest.raises(DistributedError, match=message):
        run(model="BPR", dataset="tiny", config_dict=tiny.config_dict(), **kwargs)


def test_sampled_evaluation_is_refused_with_several_processes(tiny):
    settings = tiny.config_dict(eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO",
                                           "mode": "uni100"})
    with pytest.raises(DistributedError, match="full ranking only"):
        run(model="BPR", dataset="tiny", config_dict=settings, nproc=2)


def test_an_error_in_a_process_is_one_message_from_the_launcher(tiny):
    (tiny.dir / "tiny.visual.npy").unlink()  # found missing when the processes load the features
    with pytest.raises(DistributedError, match="visual"):
        run(model="VBPR", dataset="tiny", config_dict=tiny.config_dict(), nproc=2, port=free_port())


def test_the_command_line_refuses_several_processes_with_compare(tiny):
    out = run_script("-d", "tiny", "--compare", "BPR", "--nproc=2", cwd=tiny.root)
    assert out.returncode == 2 and "--compare and --tune run one process per run" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_command_line_trains_on_two_processes_with_recbole_flags(tiny):
    config_file = tiny.write_config()
    out = run_script("-m", "BPR", "-d", "tiny", f"--config_files={config_file}", "--nproc=2",
                     f"--port={free_port()}", "--epochs=2", "--embedding_size=16", "--state=INFO", cwd=tiny.root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BPR on tiny" in out.stdout and "test" in out.stdout
    (log,) = (tiny.root / "log").rglob("*.log")  # one log, with the flags RecBole got
    text = log.read_text()
    assert "embedding_size = 16" in text and "epochs = 2" in text and "world_size = 2" in text

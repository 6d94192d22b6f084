"""Multi-process training through RecBole's own DDP, on GPUs (NCCL) and on CPUs (gloo).

RecBole 1.2.1 splits every dataloader over the processes (``DistributedSampler``), averages
the gradients with ``DistributedDataParallel`` and joins the process group in its ``Config``.
What we add (see the README, "Several GPUs or machines"):

- the process group on CPUs too (gloo; :meth:`recbole_micro.config.Config._init_device`), and
  the DDP wrap of a CPU model, which RecBole's trainer only does for one GPU per process;
- an evaluation over all users: each process ranks its share of the users, and
  :class:`GatheringCollector` gathers every share and drops the users ``DistributedSampler``
  repeats to pad the last share, so the metrics are those of a single-process evaluation
  (RecBole averages the per-process metrics instead, weighted by batch counts);
- one writer: only the first process writes the checkpoint, the logs and the graph cache, and
  the other processes build their dataset and model after it, reading what it wrote.

What every process computes in full: the item graphs (built from parameters that DDP keeps
identical, so every process builds the same graphs on the same batch), L_C over all items and
h_u. Their gradients are averaged over the processes like the BPR term's, so each counts once.
"""
import hashlib
import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist
from recbole.evaluator import Collector

PER_USER_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items")


def is_distributed(config):
    return not config["single_spec"]


@contextmanager
def writer_first(config):
    """Run the block in the first process of each machine first, then in the others.

    The first writes the derived files (features, graph cache); the others then read them.
    """
    waits = is_distributed(config) and config["local_rank"] != 0
    if waits:
        dist.barrier()
    yield
    if is_distributed(config) and not waits:
        dist.barrier()


def wrap_model(model, device):
    """``DistributedDataParallel`` around ``model``, on one GPU or on the CPU.

    Buffers are not broadcast, neither at the start nor at every batch: ours (features, the
    initial item graphs, the sparse adjacency) are the same data in every process, sparse CSR
    tensors cannot be broadcast, and broadcasting features would move N x d floats per batch.
    """
    with warnings.catch_warnings():
        # torch 2.13 deprecates broadcast_buffers for forward_sync_buffers, which still syncs the
        # buffers at the start, and cannot sync the sparse CSR adjacency buffers of the CF backbones;
        # its own message says to keep broadcast_buffers=False for buffers that must not be synced.
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*deprecated", category=FutureWarning)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )


def broadcast_from_first(value):
    """``value`` as the first process has it (e.g. the checkpoint path every process reloads)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(model):
    """SHA-256 of every parameter and persistent buffer, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class GatheringCollector(Collector):
    """RecBole's collector, gathering every process's users before the metrics are computed.

    Each process ranks its share of the users; ``DistributedSampler`` pads the last share by
    repeating users. The gathered rows are put in user-id order with each user once, as a
    single process collects them, so the metrics are computed once over all users.
    """

    def __init__(self, config):
        super().__init__(config)
        self.uid_field = config["USER_ID_FIELD"]
        self._uids = []

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        self._uids.append(interaction[self.uid_field].detach().cpu())

    def get_data_struct(self):
        struct = super().get_data_struct()
        uids = torch.cat(self._uids) if self._uids else torch.zeros(0, dtype=torch.long)
        self._uids = []
        local = {key: struct[key] for key in PER_USER_KEYS if key in struct}
        shares = [None] * dist.get_world_size()
        dist.all_gather_object(shares, (uids, local))
        all_uids = torch.cat([share_uids for share_uids, _ in shares])
        users, inverse = torch.unique(all_uids, return_inverse=True)  # sorted, as one process sees them
        position = torch.arange(len(all_uids))
        first = torch.full((len(users),), len(all_uids), dtype=torch.long).scatter_reduce_(0, inverse, position, "amin")
        for key in local:
            struct.set(key, torch.cat([rows[key] for _, rows in shares])[first])
        return struct

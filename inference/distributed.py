"""Data-parallel minibatch fitting on torch.distributed (DDP), the standard engine.

Launch any script, or the command line, with torchrun:

    torchrun --nproc_per_node=2 -m ppl_models fit patches NADE --arg hidden=100 \\
        --arg output=mog --arg components=10 --method map --device cpu --save r.pt

or initialise the process group yourself (`torch.distributed.init_process_group`). While it is
initialised with more than one process, every minibatch Adam fit (`mle`/`map`) runs
data-parallel:

- each rank reads its shard of the training data (`DistributedSampler`, reshuffled each epoch
  with the fit's seed); ``batch_size`` is per rank, so the global batch is batch_size x ranks;
- gradients are averaged by `DistributedDataParallel` (NCCL on GPUs, gloo on CPUs);
- the epoch's training loss and the validation nats (each rank scores its share of the
  validation data) are all-reduced, so early stopping is decided alike on every rank;
- a non-finite loss on any rank stops every rank after that step, the best parameters kept;
- every rank returns the same fit; rank 0 writes (`Fit.save` is a no-op elsewhere).
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """True where results are written: rank 0, or the only process."""
    return rank() == 0


@contextlib.contextmanager
def from_environment(device=None):
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, ...) when
    launched that way and not yet initialised; NCCL for a CUDA device (each rank on its
    LOCAL_RANK GPU), gloo otherwise. Tears it down on exit. A plain run: nothing happens."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not launched or not dist.is_available() or dist.is_initialized():
        yield
        return
    cuda = device is not None and str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


class Shards:
    """This rank's minibatches of n data for each epoch (a `DistributedSampler` over 0..n-1,
    padded to equal length so every rank takes the same number of steps)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        from torch.utils.data import DistributedSampler

        self.sampler = DistributedSampler(
            range(n),
            num_replicas=world_size(),
            rank=rank(),
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.batch_size = batch_size

    def epoch(self, epoch: int, device) -> list[torch.Tensor]:
        self.sampler.set_epoch(epoch)
        return torch.tensor(list(self.sampler), device=device).split(self.batch_size)


def all_finite(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (every rank calls this each step)."""
    flag = torch.tensor([1.0 if bool(torch.isfinite(loss)) else 0.0], device=_comm(loss))
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def mean_over_ranks(total: float, count: int, like: torch.Tensor) -> float:
    """The mean of per-rank (sum, count) pairs, the same number on every rank."""
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=_comm(like))
    dist.all_reduce(t)
    return float(t[0] / t[1])


def _comm(like: torch.Tensor) -> torch.device:
    """Where collectives run: the CUDA device for NCCL, else the CPU (gloo)."""
    return like.device if dist.get_backend() == "nccl" else torch.device("cpu")


class Parameters(torch.nn.Module):
    """The fit's unconstrained leaves as a module, so that DistributedDataParallel can
    average their gradients; calling it runs the objective on a batch."""

    def __init__(self, objective):
        super().__init__()
        self.objective = objective
        self.leaves = torch.nn.ParameterDict(
            {_key(k): torch.nn.Parameter(v.detach().clone()) for k, v in objective.leaves.items()}
        )
        objective.leaves = {k: self.leaves[_key(k)] for k in objective.leaves}

    def forward(self, batch, idx=None):
        return self.objective(batch, idx)


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


def wrap(objective):
    """(a DDP module whose call is the objective, its parameters)."""
    from torch.nn.parallel import DistributedDataParallel

    module = Parameters(objective)
    device = next(iter(module.parameters())).device
    ddp = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
    return ddp, list(module.parameters())

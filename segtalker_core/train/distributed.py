"""Processes of a training run: ``torchrun`` DDP setup, per-rank seeds, and the data order.

One process (``python -m segtalker_core train ...``) or several (``torchrun --nproc_per_node N
-m segtalker_core train ...``, also across nodes with ``--nnodes``/``--rdzv-endpoint``) run the
same code. torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``;
:func:`setup` reads them (``env://``) and starts the process group: NCCL when training on CUDA,
gloo on the CPU (what the tests use). Rank 0 alone logs, writes samples and checkpoints.

Data order (:class:`GlobalBatchSampler`). Instead of torch's ``DistributedSampler`` (which deals
indices round-robin, ``perm[rank::world]``), one permutation per epoch (seeded by the run seed
and the epoch) is cut into *global* batches of ``loop.batch_size`` samples; process ``r`` takes
the ``r``-th contiguous share of each and cuts it into micro-batches. So the micro-batches a
step sees are the same whatever the number of processes (1 process x 2 accumulated
micro-batches = 2 processes x 1), and so are per-micro-batch statistics such as BatchNorm's: a
run on 1 or N processes with the same global batch follows the same loss curve up to float
summation order. A step's position is a pure function of the step number, so ``--resume``
starts exactly where the checkpoint was taken, mid-epoch, without replaying the data.
Incomplete last batches of an epoch are dropped (as ``drop_last``). The sampler yields
``(epoch, index)`` pairs and :class:`EpochIndexed` calls the dataset's ``set_epoch`` (when it
has one) before each item, so datasets that redraw negatives/references per epoch do so in
DataLoader workers too.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .stage import Runtime


@dataclass(frozen=True)
class ProcessInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_info() -> ProcessInfo:
    """Rank, world size and local rank from torchrun's environment (1 process without it)."""
    def env_int(name: str, default: int) -> int:
        value = os.environ.get(name)
        try:
            return default if value is None else int(value)
        except ValueError:
            raise ValueError(f"environment variable {name}={value!r} is not an integer; it is set "
                             f"by torchrun") from None

    info = ProcessInfo(env_int("RANK", 0), env_int("WORLD_SIZE", 1), env_int("LOCAL_RANK", 0))
    if not 0 <= info.rank < info.world_size:
        raise ValueError(f"RANK={info.rank} is outside WORLD_SIZE={info.world_size}")
    return info


def training_device(choice: str, local_rank: int) -> torch.device:
    """``loop.device``: auto (CUDA when present, else CPU), cpu, cuda or cuda:N. Several processes
    on CUDA use ``cuda:LOCAL_RANK`` each."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise ValueError(f"loop.device {choice!r} is not a device; use auto, cpu, cuda or cuda:N"
                         ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("loop.device is cuda, but no CUDA device is available here; use "
                             "loop.device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def setup(device_choice: str, precision_choice: str) -> Runtime:
    """Start the process group when launched by torchrun; return this process's runtime."""
    from .. import precision

    info = process_info()
    device = training_device(device_choice, info.local_rank)
    if info.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, init_method="env://",
                                             rank=info.rank, world_size=info.world_size)
    recommended = None
    if device.type == "cuda":
        recommended = torch.bfloat16 if precision.device_capabilities(device).bf16 \
            else torch.float16
    dtype = precision.resolve(precision_choice, device, recommended=recommended)
    return Runtime(device=device, dtype=dtype, rank=info.rank, world_size=info.world_size,
                   local_rank=info.local_rank)


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def seed_everything(seed: int, rank: int, step: int = 0) -> None:
    """Seed python, numpy and torch for process ``rank`` at ``step`` (different per rank, so
    random augmentations differ; resumed runs reseed from the step they resume at)."""
    value = (int(seed) * 1_000_003 + rank * 7919 + step) % (2 ** 31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over processes (same keys on every rank; identity alone)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    t /= torch.distributed.get_world_size()
    return dict(zip(keys, t.tolist()))


def any_process(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a stop request)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


@dataclass(frozen=True)
class BatchPlan:
    """How one optimiser step's global batch splits over processes and micro-batches."""

    batch_size: int  # global
    micro_batch_size: int  # per process and forward
    world_size: int

    @property
    def accumulation(self) -> int:
        return self.batch_size // (self.micro_batch_size * self.world_size)

    @property
    def per_process(self) -> int:
        return self.batch_size // self.world_size


def plan_batches(batch_size: int, micro_batch_size: int, world_size: int) -> BatchPlan:
    """Check that the global batch splits exactly (error names the three numbers)."""
    micro = micro_batch_size or batch_size // world_size
    if micro < 1 or batch_size % (micro * world_size):
        raise ValueError(
            f"loop.batch_size {batch_size} does not split into {world_size} process(es) x "
            f"micro-batches of {micro_batch_size or 'batch_size / processes'}; choose "
            f"loop.batch_size a multiple of micro_batch_size x processes "
            f"({max(micro, 1) * world_size})")
    return BatchPlan(batch_size, micro, world_size)


class GlobalBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Micro-batches of indices for process ``rank``, step after step, from ``start_step``
    (see the module docstring). Infinite: the loop stops after its last step."""

    def __init__(self, dataset_size: int, plan: BatchPlan, rank: int, seed: int,
                 start_step: int = 0) -> None:
        if dataset_size < plan.batch_size:
            raise ValueError(f"dataset has {dataset_size} training samples, fewer than one "
                             f"batch (loop.batch_size = {plan.batch_size})")
        self.size = int(dataset_size)
        self.plan = plan
        self.rank = int(rank)
        self.seed = int(seed)
        self.start_step = int(start_step)

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.plan.batch_size

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g)

    def step_indices(self, step: int) -> list[list[tuple[int, int]]]:
        """This process's micro-batches of step ``step``: lists of ``(epoch, index)``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        return self._share(self.permutation(epoch), epoch, position)

    def _share(self, perm: torch.Tensor, epoch: int, position: int) -> list[list[tuple[int, int]]]:
        b, share, m = self.plan.batch_size, self.plan.per_process, self.plan.micro_batch_size
        start = position * b + self.rank * share
        mine = [(epoch, i) for i in perm[start:start + share].tolist()]
        return [mine[i:i + m] for i in range(0, share, m)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            perm = self.permutation(epoch)
            for position in range(first, self.steps_per_epoch):
                yield from self._share(perm, epoch, position)
                step += 1


class EpochIndexed(torch.utils.data.Dataset):
    """``dataset[(epoch, i)]`` = ``dataset.set_epoch(epoch); dataset[i]`` (see the docstring)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None and getattr(self.dataset, "epoch", None) != epoch:
            set_epoch(epoch)
        return self.dataset[index]

"""The training loop's reductions over DDP workers, on a real 2-process gloo group (no Ray: the Ray Train runs of
``test_driver.py`` cover the loop end to end)."""

import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from study.training.loop import all_reduce

pytestmark = pytest.mark.slow  # starts processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reduce_on_two_workers(rank: int, port: int, results) -> None:
    """Rank 1 alone sees a diverged loss; both ask whether any worker did, and sum their counts."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        diverged = all_reduce([float(rank == 1)], dist.ReduceOp.MAX)
        summed = all_reduce([1.0, 10.0 * rank])
        results[rank] = (diverged, summed)
    finally:
        dist.destroy_process_group()


def test_a_divergence_on_one_worker_stops_every_worker():
    """The loop breaks an epoch when ``all_reduce([diverged], MAX)`` says so: every worker must get the same answer,
    or the one that went on would wait forever for the other's gradients."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(reduce_on_two_workers, args=(free_port(), results), nprocs=2, join=True)
        answers = dict(results)
    assert answers == {0: ([1.0], [2.0, 10.0]), 1: ([1.0], [2.0, 10.0])}


def test_one_worker_reduces_to_its_own_values():
    assert all_reduce([3.0, 4.0], dist.ReduceOp.MAX) == [3.0, 4.0]

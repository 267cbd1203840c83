"""Runs model work off the event loop: torch and FAISS release the GIL, the loop does not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import faiss
import torch
from threadpoolctl import threadpool_limits

from services.batching import Overloaded

T = TypeVar("T")


def set_compute_threads(threads: int) -> None:
    """Threads *inside* one torch op / FAISS search / numpy BLAS call. One per call with
    several worker processes measured better than several per call on 2 cores (see
    docs/benchmarks.md). numpy's own OpenBLAS matters too: left at one thread per core, a
    small matrix-vector product after a torch or FAISS call waits on threads still spinning
    from it (measured: a 10k x 64 live-segment scan took 8 ms instead of 0.2)."""
    global _compute_threads
    _compute_threads = threads
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    threadpool_limits(threads, user_api="blas")


_compute_threads: int | None = None


def _init_worker() -> None:
    """OpenMP's thread count is per calling thread: a worker thread starts with the
    default (one per core), not the main thread's setting, so FAISS searches run from the
    executor used two threads here and cost 0.3 ms more per 100k-item search (measured)."""
    if _compute_threads is not None:
        faiss.omp_set_num_threads(_compute_threads)
        torch.set_num_threads(_compute_threads)


class ModelExecutor:
    """The model threads of one service. `run` is for loads, warm-ups and catalogue
    changes; `run_request` for a request's model call when it skips the micro-batcher
    (`--batching off`), bounded like the batcher's queue."""

    def __init__(self, workers: int, name: str, max_waiting: int | None = None) -> None:
        """`max_waiting`: request calls that may wait for a thread; past it `run_request`
        raises Overloaded at once (None: no bound)."""
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name, initializer=_init_worker
        )
        self._max_requests = None if max_waiting is None else workers + max_waiting
        self._requests = 0  # request calls running or waiting for a thread

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self._pool

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def run_request(self, fn: Callable[[], T]) -> T:
        if self._max_requests is not None and self._requests >= self._max_requests:
            raise Overloaded(f"{self._requests} requests already running or waiting")
        self._requests += 1
        try:
            return await self.run(fn)
        finally:
            self._requests -= 1

    async def shutdown(self) -> None:
        """Let running work finish without blocking the event loop meanwhile."""
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=False)

"""Runs model work off the event loop: torch and FAISS release the GIL, the loop does not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import faiss
import torch

T = TypeVar("T")


def set_compute_threads(threads: int) -> None:
    """Threads *inside* one torch op / FAISS search. One per call with several worker
    processes measured better than several per call on 2 cores (see docs/benchmarks.md)."""
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


class ModelExecutor:
    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self._pool

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

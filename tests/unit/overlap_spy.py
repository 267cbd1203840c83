"""A real FAISS index that reports whether two searches were ever inside it at once."""

from __future__ import annotations

import threading

import faiss
import numpy as np


class OverlapSpy:
    """Each search waits (up to a second) for a second search to arrive: with searches
    serialised the second never arrives while the first waits, and the wait times out."""

    def __init__(self, index: faiss.Index) -> None:
        self._index = index
        self._rendezvous = threading.Barrier(2, timeout=1.0)
        self.overlapped = False

    def search(self, queries: np.ndarray, k: int, **kwargs):
        try:
            self._rendezvous.wait()
            self.overlapped = True
        except threading.BrokenBarrierError:
            pass
        return self._index.search(queries, k, **kwargs)

    def __getattr__(self, name: str):  # ntotal, d, ...: the real index's
        return getattr(self._index, name)

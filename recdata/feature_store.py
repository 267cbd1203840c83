"""User histories for the gateway: the in-memory feature store the demo ships with.

A production deployment swaps this for its own store (Redis, Feast …); the gateway only
needs `recent_items(user_id)` (the models' input) and `seen_items(user_id)` (what not to
recommend again).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recdata.items import ItemTable
from recdata.split import UserSequences

MAX_STORED_HISTORY = 200
# Distinct items a user has interacted with, newest kept: the gateway excludes them all, not
# only the recent window (a heavy user would otherwise be shown what they saw long ago).
# Bounded so that with the gateway's own limits (5,000 request exclusions, 200 session
# items) an exclusion list stays within retrieval's 10,000.
MAX_STORED_SEEN = 4000


class UserHistoryStore:
    def __init__(
        self, histories: dict[str, np.ndarray], seen: dict[str, np.ndarray] | None = None
    ) -> None:
        """`histories`: recent items per user, oldest first; `seen`: sorted distinct items
        per user (None: the histories' items, as stores written before it was kept)."""
        self._histories = histories
        self._seen = seen if seen is not None else {u: np.unique(h) for u, h in histories.items()}

    def __len__(self) -> int:
        return len(self._histories)

    def user_ids(self) -> list[str]:
        return sorted(self._histories)

    def recent_items(self, user_id: str) -> np.ndarray:
        """External item ids, oldest first; empty for an unknown user (cold start)."""
        return self._histories.get(user_id, np.empty(0, np.int64))

    def seen_items(self, user_id: str) -> np.ndarray:
        """Sorted distinct external item ids the user interacted with (the newest
        MAX_STORED_SEEN); empty for an unknown user."""
        return self._seen.get(user_id, np.empty(0, np.int64))

    @classmethod
    def from_sequences(cls, sequences: UserSequences, items: ItemTable) -> UserHistoryStore:
        histories, seen = {}, {}
        for user, seq in zip(sequences.user_ids, sequences.sequences, strict=True):
            histories[user] = items.item_ids[seq[-MAX_STORED_HISTORY:]]
            seen[user] = np.sort(items.item_ids[_newest_distinct(seq, MAX_STORED_SEEN)])
        return cls(histories, seen)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        users = list(self._histories)
        offsets, flat = _packed([self._histories[u] for u in users])
        seen_offsets, seen_flat = _packed([self.seen_items(u) for u in users])
        np.savez(
            directory / "histories.npz",
            user_ids=np.array(users, dtype=str),
            offsets=offsets,
            item_ids=flat,
            seen_offsets=seen_offsets,
            seen_item_ids=seen_flat,
        )

    @classmethod
    def load(cls, directory: Path) -> UserHistoryStore:
        data = np.load(directory / "histories.npz")
        users = [str(u) for u in data["user_ids"]]
        histories = _unpacked(users, data["offsets"], data["item_ids"])
        if "seen_offsets" not in data:  # written before the seen sets were kept
            return cls(histories)
        return cls(histories, _unpacked(users, data["seen_offsets"], data["seen_item_ids"]))


def _newest_distinct(sequence: np.ndarray, limit: int) -> np.ndarray:
    """The last `limit` distinct values of `sequence` by their last occurrence."""
    reversed_unique, first_in_reversed = np.unique(sequence[::-1], return_index=True)
    newest_first = reversed_unique[np.argsort(first_in_reversed, kind="stable")]
    return newest_first[:limit]


def _packed(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]), flat


def _unpacked(users: list[str], offsets: np.ndarray, flat: np.ndarray) -> dict[str, np.ndarray]:
    return {u: flat[offsets[i] : offsets[i + 1]] for i, u in enumerate(users)}

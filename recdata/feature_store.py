"""User histories for the gateway: the in-memory feature store the demo ships with.

A production deployment swaps this for its own store (Redis, Feast …); the gateway only
needs `recent_items(user_id)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recdata.items import ItemTable
from recdata.split import UserSequences

MAX_STORED_HISTORY = 200


class UserHistoryStore:
    def __init__(self, histories: dict[str, np.ndarray]) -> None:
        self._histories = histories

    def __len__(self) -> int:
        return len(self._histories)

    def user_ids(self) -> list[str]:
        return sorted(self._histories)

    def recent_items(self, user_id: str) -> np.ndarray:
        """External item ids, oldest first; empty for an unknown user (cold start)."""
        return self._histories.get(user_id, np.empty(0, np.int64))

    @classmethod
    def from_sequences(cls, sequences: UserSequences, items: ItemTable) -> UserHistoryStore:
        return cls(
            {
                user: items.item_ids[seq[-MAX_STORED_HISTORY:]]
                for user, seq in zip(sequences.user_ids, sequences.sequences, strict=True)
            }
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        users = list(self._histories)
        lengths = np.array([len(self._histories[u]) for u in users], dtype=np.int64)
        flat = (
            np.concatenate([self._histories[u] for u in users]) if users else np.empty(0, np.int64)
        )
        np.savez(
            directory / "histories.npz",
            user_ids=np.array(users, dtype=str),
            offsets=np.concatenate([[0], np.cumsum(lengths)]),
            item_ids=flat,
        )

    @classmethod
    def load(cls, directory: Path) -> UserHistoryStore:
        data = np.load(directory / "histories.npz")
        offsets, flat = data["offsets"], data["item_ids"]
        return cls(
            {str(u): flat[offsets[i] : offsets[i + 1]] for i, u in enumerate(data["user_ids"])}
        )

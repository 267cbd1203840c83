"""Time-based leave-last-out split and per-user sequences as dense item rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recdata.items import ItemTable


@dataclass
class UserSequences:
    """Every user's items in time order, as rows of an ItemTable."""

    user_ids: list[str]
    sequences: list[np.ndarray]  # int64 rows, oldest first


@dataclass
class LeaveLastOutSplit:
    train: UserSequences  # all but the last two events (users with >= 3 events)
    validation_targets: np.ndarray  # row of each user's second-to-last item
    test_targets: np.ndarray  # row of each user's last item
    full: UserSequences  # every event, for the serving feature store


def user_sequences(interactions: pd.DataFrame, items: ItemTable) -> UserSequences:
    frame = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    rows, known = items.rows_of(frame["item_id"].to_numpy(dtype=np.int64))
    frame = frame.assign(row=rows)[known]
    user_ids: list[str] = []
    sequences: list[np.ndarray] = []
    for user, group in frame.groupby("user_id", sort=True):
        user_ids.append(str(user))
        sequences.append(group["row"].to_numpy(dtype=np.int64))
    return UserSequences(user_ids, sequences)


def leave_last_out(sequences: UserSequences, min_events: int = 3) -> LeaveLastOutSplit:
    """Each user's last event is the test target, the one before it validation."""
    keep = [i for i, s in enumerate(sequences.sequences) if len(s) >= min_events]
    users = [sequences.user_ids[i] for i in keep]
    seqs = [sequences.sequences[i] for i in keep]
    return LeaveLastOutSplit(
        train=UserSequences(users, [s[:-2] for s in seqs]),
        validation_targets=np.array([s[-2] for s in seqs], dtype=np.int64),
        test_targets=np.array([s[-1] for s in seqs], dtype=np.int64),
        full=sequences,
    )


def popularity_counts(train: UserSequences, num_items: int) -> np.ndarray:
    counts = np.zeros(num_items, dtype=np.float32)
    for seq in train.sequences:
        np.add.at(counts, seq, 1.0)
    return counts

"""Turns variable-length item histories into the user tower's fixed-width input."""

from __future__ import annotations

import numpy as np
import torch

from recdata.items import ItemTable


def pad_histories(
    histories: list[np.ndarray], items: ItemTable, max_history: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-align the newest `max_history` rows; pad with the padding row (= len(items))."""
    pad_item = len(items)
    pad_category = len(items.category_names)
    rows = np.full((len(histories), max_history), pad_item, dtype=np.int64)
    for i, history in enumerate(histories):
        recent = history[-max_history:]
        if len(recent):
            rows[i, max_history - len(recent) :] = recent
    categories = np.where(
        rows == pad_item, pad_category, items.categories[np.minimum(rows, pad_item - 1)]
    )
    return torch.from_numpy(rows), torch.from_numpy(categories)

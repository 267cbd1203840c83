"""Request validation helpers (services/validation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from services import validation
from services.errors import InvalidArgument


@pytest.mark.parametrize("seed", range(20))
def test_has_duplicates_agrees_with_np_unique(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 60, size=int(rng.integers(0, 40)), dtype=np.int64)
    assert validation.has_duplicates(ids) == (len(np.unique(ids)) != len(ids))


def test_has_duplicates_edges() -> None:
    assert not validation.has_duplicates(np.empty(0, np.int64))
    assert not validation.has_duplicates(np.array([7], np.int64))
    assert validation.has_duplicates(np.array([3, 9, 3], np.int64))
    assert not validation.has_duplicates(np.array([9, 3, 5], np.int64))


def test_item_ids_rejects_non_positive_ids_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match="candidate_item_ids") as info:
        validation.item_ids([5, 0, 2], "candidate_item_ids", 10)
    assert "positive" in str(info.value)
    with pytest.raises(InvalidArgument, match="at most 2 ids"):
        validation.item_ids([1, 2, 3], "recent_item_ids", 2)
    assert validation.item_ids([4, 1], "x", 2).tolist() == [4, 1]

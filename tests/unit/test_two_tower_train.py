"""The two-tower trainer's edges on too little data."""

from __future__ import annotations

import numpy as np
import pytest

from recdata.errors import TooLittleData
from recdata.items import ItemTable
from recdata.split import UserSequences
from recdata.synthetic import generate
from retrieval.train import TwoTowerTrainConfig, train_two_tower, user_embeddings

ITEMS = ItemTable.from_frame(generate(num_items=20, num_users=5, mean_events_per_user=3).items)


def test_users_with_one_event_each_are_too_little_data() -> None:
    single_events = UserSequences(["a", "b"], [np.array([0]), np.array([3])])
    with pytest.raises(TooLittleData, match="no user has 2 or more training events"):
        train_two_tower(single_events, ITEMS, TwoTowerTrainConfig(epochs=1))


def test_no_histories_embed_to_no_rows_of_the_model_width() -> None:
    two = UserSequences(["a", "b"], [np.array([0, 1, 2]), np.array([3, 4, 5])])
    model = train_two_tower(two, ITEMS, TwoTowerTrainConfig(epochs=1, dim=16))
    assert user_embeddings(model, [], ITEMS).shape == (0, 16)
    assert user_embeddings(model, [np.array([1, 2])], ITEMS).shape == (1, 16)

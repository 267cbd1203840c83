"""EvaluationSet target selection: test vs. validation histories and targets."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.harness import EvaluationSet
from recdata.split import UserSequences, leave_last_out


def _split():
    sequences = UserSequences(
        ["a", "b", "c"],
        [
            np.array([0, 1, 2, 3, 4]),  # train 0 1 2, validation 3, test 4
            np.array([5, 6, 7]),  # train 5, validation 6, test 7
            np.array([8, 9]),  # too short: left out
        ],
    )
    split = leave_last_out(sequences)
    popularity = np.zeros(10, np.float32)
    for seq in split.train.sequences:
        np.add.at(popularity, seq, 1.0)
    return split, popularity


def test_test_target_sees_the_validation_event() -> None:
    split, popularity = _split()
    es = EvaluationSet.from_split(split, popularity)
    assert es.target == "test"
    assert [h.tolist() for h in es.histories] == [[0, 1, 2, 3], [5, 6]]
    assert es.targets.tolist() == [4, 7]
    assert es.cold_targets.tolist() == [True, True]


def test_validation_target_uses_training_events_only() -> None:
    split, popularity = _split()
    es = EvaluationSet.from_split(split, popularity, target="validation")
    assert es.target == "validation"
    assert [h.tolist() for h in es.histories] == [[0, 1, 2], [5]]
    assert es.targets.tolist() == [3, 6]
    # Neither the validation nor the test event is ever in a validation history.
    for history, target, test in zip(es.histories, es.targets, split.test_targets, strict=True):
        assert target not in history and test not in history
    assert es.exclusions()[0].tolist() == [0, 1, 2]


def test_validation_target_with_a_user_sample_matches_the_full_set() -> None:
    split, popularity = _split()
    full = EvaluationSet.from_split(split, popularity, target="validation")
    sample = EvaluationSet.from_split(split, popularity, max_users=1, seed=3, target="validation")
    user = [i for i, h in enumerate(full.histories) if h.tolist() == sample.histories[0].tolist()]
    assert len(user) == 1 and full.targets[user[0]] == sample.targets[0]


def test_unknown_target_is_rejected() -> None:
    split, popularity = _split()
    with pytest.raises(ValueError, match="validation"):
        EvaluationSet.from_split(split, popularity, target="train")

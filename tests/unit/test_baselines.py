"""Recommendation and tagging baselines on hand-made data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.baselines import (
    BASELINES,
    ALSBaseline,
    ItemCooccurrenceBaseline,
    PopularityBaseline,
    _top_k,
)
from evaluation.tag_baseline import best_threshold, tag_metrics_at_k, tfidf_logreg_baseline
from recdata.split import UserSequences


def _sequences(*seqs: list[int]) -> UserSequences:
    return UserSequences([f"u{i}" for i in range(len(seqs))], [np.array(s, np.int64) for s in seqs])


def _rows(*rows: list[int]) -> list[np.ndarray]:
    return [np.array(r, np.int64) for r in rows]


def _assert_valid(ranked: np.ndarray, histories: list[np.ndarray], k: int, num_items: int) -> None:
    assert ranked.shape == (len(histories), k)
    assert ranked.dtype == np.int64
    for row, history in zip(ranked, histories, strict=True):
        items = row[row >= 0]
        assert len(np.unique(items)) == len(items), f"duplicates in {row}"
        assert not np.isin(items, history).any(), f"seen item in {row}"
        assert np.all(items < num_items)
        # -1 only as trailing padding, and only once the unseen catalogue is exhausted
        assert np.all(row[len(items) :] == -1), f"-1 before an item in {row}"
        assert len(items) == min(k, num_items - len(np.unique(history)))


# ------------------------------------------------------------------------- popularity


def test_popularity_orders_by_training_count_then_row_and_skips_seen() -> None:
    # counts: 3 -> 4, 1 -> 3, 4 -> 2, 0 and 2 -> 1 (tie: lower row first), 5 -> 0
    train = _sequences([3, 1, 3, 4], [3, 1, 0], [3, 1, 4, 3, 2])
    model = PopularityBaseline()
    model.fit(train, num_items=6)
    ranked = model.recommend(_rows([], [3], [1, 4, 1]), k=6)
    np.testing.assert_array_equal(
        ranked,
        [
            [3, 1, 4, 0, 2, 5],
            [1, 4, 0, 2, 5, -1],
            [3, 0, 2, 5, -1, -1],
        ],
    )


def test_recommend_before_fit_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        PopularityBaseline().recommend(_rows([0]), k=3)


# ----------------------------------------------------------------------- co-occurrence


def _follows_data(rng: np.random.Generator) -> UserSequences:
    """Item 7 always directly follows item 2; item 1 is by far the most popular."""
    seqs = []
    for _ in range(60):
        before, after = rng.choice(np.arange(8, 40), size=2, replace=False)
        seqs.append([int(before), 2, 7, int(after), 1, 1])
    return _sequences(*seqs)


def test_cooccurrence_recommends_the_item_that_always_follows() -> None:
    train = _follows_data(np.random.default_rng(0))
    model = ItemCooccurrenceBaseline()
    model.fit(train, num_items=40)
    histories = _rows([5, 12, 2], [2])  # item 5 never occurs in training
    top = model.recommend(histories, k=5)
    assert top[:, 0].tolist() == [7, 7]
    popular = PopularityBaseline()
    popular.fit(train, num_items=40)
    assert popular.recommend(histories, k=1)[:, 0].tolist() == [1, 1]  # not just popularity


def test_cooccurrence_falls_back_to_popularity_order() -> None:
    train = _follows_data(np.random.default_rng(1))
    cooc, popular = ItemCooccurrenceBaseline(), PopularityBaseline()
    cooc.fit(train, num_items=45)
    popular.fit(train, num_items=45)
    # Items 40-44 never occur in training: no co-occurrence evidence at all.
    histories = _rows([], [41, 43])
    np.testing.assert_array_equal(cooc.recommend(histories, 45), popular.recommend(histories, 45))
    # With evidence, every scored item comes before every unscored one, which follow in
    # popularity order, up to k.
    filled = cooc.recommend(_rows([2]), k=40)[0]
    _assert_valid(filled[None, :], _rows([2]), 40, 45)
    assert cooc.similarity is not None
    scored = set(cooc.similarity[2].indices.tolist())
    assert set(filled[: len(scored)].tolist()) == scored
    by_popularity = popular.recommend(_rows([2, *scored]), k=40 - len(scored))[0]
    np.testing.assert_array_equal(filled[len(scored) :], by_popularity)


# ------------------------------------------------------------------------------ ALS


def _two_blocks(rng: np.random.Generator) -> UserSequences:
    """Users 0-19 use only items 0-9, users 20-39 only items 10-19; 6 items each."""
    seqs = []
    for user in range(40):
        block = np.arange(10) + (0 if user < 20 else 10)
        seqs.append(rng.choice(block, size=6, replace=False).tolist())
    return _sequences(*seqs)


def test_als_recommends_within_the_users_block() -> None:
    pytest.importorskip("implicit")
    train = _two_blocks(np.random.default_rng(0))
    # Enough regularisation that 8 factors find the two blocks rather than fit each user.
    model = ALSBaseline(factors=8, regularization=5.0, alpha=10.0, iterations=15, seed=0)
    model.fit(train, num_items=20)
    ranked = model.recommend(train.sequences, k=4)  # 4 unseen in-block items are left
    for user, row in enumerate(ranked):
        in_block = (row < 10) if user < 20 else (row >= 10)
        assert in_block.all(), f"user {user}: {row}"
    # Fold-in: a history never seen in training still lands in its block.
    fresh = model.recommend(_rows([11, 12, 13]), k=5)
    assert np.all(fresh >= 10), fresh


def test_als_is_deterministic_for_a_seed() -> None:
    pytest.importorskip("implicit")
    train = _two_blocks(np.random.default_rng(3))
    runs = []
    for _ in range(2):
        model = ALSBaseline(factors=8, regularization=0.1, iterations=5, seed=7)
        model.fit(train, num_items=20)
        runs.append(model.recommend(train.sequences, k=10))
    np.testing.assert_array_equal(runs[0], runs[1])


# ---------------------------------------------------------------------- common contract


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_returns_valid_lists(name: str) -> None:
    if name == "als":
        pytest.importorskip("implicit")
    rng = np.random.default_rng(5)
    num_items = 30
    train = _sequences(*(rng.integers(0, 25, size=rng.integers(3, 12)).tolist() for _ in range(50)))
    histories = [
        np.array([], np.int64),  # cold user
        rng.integers(0, 25, size=8),  # repeats allowed
        np.array([27, 28, 29]),  # items absent from training
        np.concatenate([np.arange(num_items - 3), [4, 4]]),  # almost the whole catalogue
        np.arange(num_items),  # nothing left to recommend
    ]
    model = BASELINES[name]()
    model.fit(train, num_items)
    for k in (1, 10, 40):
        _assert_valid(model.recommend(histories, k), histories, k, num_items)
    assert model.recommend([], 5).shape == (0, 5)


def test_top_k_breaks_ties_exactly_by_the_tiebreak_key() -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 3, size=(200, 50)).astype(np.float64)  # heavy ties
    keys[:, :5] = -np.inf
    tiebreak = rng.permutation(50).astype(np.float64)
    expected = np.stack([np.lexsort((-tiebreak, -row))[:12] for row in keys])
    np.testing.assert_array_equal(_top_k(keys, 12, tiebreak), expected)
    short = _top_k(keys[:, :8], 6, tiebreak[:8])  # only 3 finite keys per row
    assert np.all(short[:, 3:] == -1) and np.all(short[:, :3] >= 5)


# -------------------------------------------------------------------------- tagging


def test_tag_metrics_at_k_match_hand_computed_values() -> None:
    proba = np.array(
        [
            [0.9, 0.1, 0.8, 0.3],
            [0.2, 0.7, 0.7, 0.1],  # tie: tag 1 beats tag 2 (lower index)
            [0.5, 0.5, 0.5, 0.5],  # no true tag: left out
        ]
    )
    true = np.array([[1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
    # item 0: top1 {0} hit 1/1, top3 {0, 2, 3} hits 2; item 1: top1 {1} miss, top3 hits 1
    assert tag_metrics_at_k(proba, true, 1) == pytest.approx(
        {"precision@1": 0.5, "recall@1": (1 / 2 + 0) / 2}
    )
    assert tag_metrics_at_k(proba, true, 3) == pytest.approx(
        {"precision@3": (2 / 3 + 1 / 3) / 2, "recall@3": 1.0}
    )
    # k beyond the vocabulary is capped at it: precision divides by 4, not 10
    assert tag_metrics_at_k(proba, true, 10) == pytest.approx(
        {"precision@10": (2 / 4 + 1 / 4) / 2, "recall@10": 1.0}
    )


KEYWORDS = {"cotton": "cotton", "denim": "denim", "wool": "wool", "red": "red", "navy": "blue"}
FILLER = [
    "shirt",
    "dress",
    "jacket",
    "soft",
    "classic",
    "everyday",
    "casual",
    "fit",
    "new",
    "style",
    "modern",
    "light",
]


def _toy_items(rng: np.random.Generator, n: int) -> tuple[list[str], list[list[str]]]:
    texts, tags = [], []
    for _ in range(n):
        words = list(rng.choice(list(KEYWORDS), size=rng.integers(1, 3), replace=False))
        tags.append([KEYWORDS[w] for w in words])
        words += list(rng.choice(FILLER, size=4))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, tags


def test_tfidf_logreg_learns_a_keyword_to_tag_mapping() -> None:
    rng = np.random.default_rng(0)
    train_texts, train_tags = _toy_items(rng, 400)
    test_texts, test_tags = _toy_items(rng, 100)
    vocabulary = [*sorted(set(KEYWORDS.values())), "never-seen"]
    metrics = tfidf_logreg_baseline(
        train_texts, train_tags, test_texts, test_tags, vocabulary, seed=0, n_jobs=1
    )
    assert metrics["micro_f1"] > 0.9
    assert metrics["precision@1"] > 0.9
    assert metrics["num_tags"] == 6 and metrics["num_trained_tags"] == 5
    assert 0.0 < metrics["threshold"] < 1.0
    fixed = tfidf_logreg_baseline(
        train_texts, train_tags, test_texts, test_tags, vocabulary, threshold=0.5, n_jobs=1
    )
    assert fixed["threshold"] == 0.5


def test_best_threshold_maximises_micro_f1() -> None:
    true = np.array([[1, 0], [0, 1], [0, 0]], dtype=bool)
    proba = np.array([[0.8, 0.6], [0.3, 0.7], [0.2, 0.5]])
    # Above 0.6 and up to 0.7 keeps exactly the two true positives.
    assert 0.6 < best_threshold(proba, true) <= 0.7

from __future__ import annotations

import numpy as np

from recdata.split import UserSequences
from retrieval.covisitation import CoVisitation, fuse


def _sequences() -> UserSequences:
    # Item 1 is always followed by item 2; item 3 by item 4; 0 and 5 are noise.
    seqs = [
        np.array([0, 1, 2, 5]),
        np.array([3, 4, 1, 2]),
        np.array([1, 2, 3, 4]),
        np.array([5, 3, 4, 0]),
    ]
    return UserSequences([f"u{i}" for i in range(len(seqs))], seqs)


def test_the_item_that_always_follows_wins() -> None:
    covis = CoVisitation.fit(_sequences(), num_items=6, window=1, top=3)
    rows, scores = covis.candidates(np.array([3, 1]), k=3)
    assert rows[0] == 2  # 1 is the newest item: its follower leads
    assert 4 in rows
    assert list(scores) == sorted(scores, reverse=True)


def test_candidates_respect_exclusions_and_eligibility() -> None:
    covis = CoVisitation.fit(_sequences(), num_items=6, window=2, top=5)
    eligible = np.array([True, True, False, True, True, True])
    rows, _ = covis.candidates(np.array([1]), k=5, eligible=eligible, exclude=np.array([0]))
    assert 2 not in rows and 0 not in rows


def test_pair_scores_agree_with_candidate_votes() -> None:
    covis = CoVisitation.fit(_sequences(), num_items=6, window=2, top=5)
    history = np.array([3, 1])
    rows, scores = covis.candidates(history, k=5)
    padded = np.array([[6, 6, 3, 1]])  # right-aligned, 6 = padding
    pair = covis.pair_scores(padded, rows[None, :], pad=6)[0]
    np.testing.assert_allclose(pair, scores, rtol=1e-5)


def test_pair_scores_by_age_split_the_vote_per_history_item() -> None:
    covis = CoVisitation.fit(_sequences(), num_items=6, window=2, top=5)
    padded = np.array([[6, 6, 3, 1], [6, 6, 6, 1]])  # right-aligned, 6 = padding
    candidates = np.array([[2, 4, 0], [2, 4, 0]])
    by_age = covis.pair_scores_by_age(padded, candidates, pad=6)
    assert by_age.shape == (2, 3, min(4, covis.recent))  # the history is 4 wide
    # Age 0 is the newest item (1) alone; age 1 the one before (3); padding slots are 0.
    for j, c in enumerate(candidates[0]):
        for age, item in enumerate([1, 3]):
            hit = covis.weights[item][covis.neighbors[item] == c]
            assert by_age[0, j, age] == (hit[0] if len(hit) else 0.0)
    np.testing.assert_array_equal(by_age[1, :, 1:], 0.0)
    decay = covis.decay ** np.arange(by_age.shape[2])
    np.testing.assert_allclose(
        covis.pair_scores(padded, candidates, pad=6), by_age @ decay, rtol=1e-6
    )


def test_fuse_keeps_every_primary_row_when_k_allows_and_stays_distinct() -> None:
    primary = np.array([10, 11, 12, 13])
    secondary = np.array([12, 20, 21])
    rows, scores = fuse(primary, secondary, k=4)
    assert len(rows) == 4 and len(set(rows.tolist())) == 4
    assert rows[0] == 12  # in both lists
    assert list(scores) == sorted(scores, reverse=True)
    rows, _ = fuse(primary, secondary, k=10)
    assert set(rows.tolist()) == {10, 11, 12, 13, 20, 21}


def test_pair_scores_by_age_match_a_brute_force_reference() -> None:
    """Random tables, histories with padding and candidates beyond the table (live items):
    the binary-search lookup equals comparing every candidate with every neighbour."""
    rng = np.random.default_rng(7)
    n, m = 40, 6
    neighbors = np.full((n, m), -1, np.int64)
    weights = np.zeros((n, m), np.float32)
    for i in range(n):
        k = int(rng.integers(0, m + 1))
        neighbors[i, :k] = rng.choice(n, k, replace=False)
        weights[i, :k] = np.sort(rng.random(k).astype(np.float32))[::-1]
    covis = CoVisitation(neighbors, weights, recent=4)
    pad = n
    history = rng.integers(0, n, (5, 7))
    history[0, :5] = pad  # a short history, right-aligned
    history[1, :] = pad  # no history at all
    candidates = rng.integers(0, n + 3, (5, 9))  # n, n+1, n+2: rows past the table
    expected = np.zeros((5, 9, 4), np.float32)
    for b in range(5):
        newest = history[b, -4:][::-1]
        for j, c in enumerate(candidates[b]):
            for age, item in enumerate(newest):
                if item != pad:
                    hit = neighbors[item] == c
                    expected[b, j, age] = weights[item][hit].sum()
    np.testing.assert_allclose(covis.pair_scores_by_age(history, candidates, pad), expected)

"""Several Rank requests scored by one forward pass give each request what it gets alone:
different users, history lengths and candidate counts concatenate without padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ranking.scorer
from ranking.scorer import (
    IncompatibleRanker,
    Ranked,
    RankingScorer,
    RankQuery,
    UnknownCandidates,
    rank_grouped,
    resolve_device,
)
from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore


@pytest.fixture(scope="module")
def scorer(artifacts: Path) -> RankingScorer:
    return RankingScorer.load(resolve(artifacts), device="cpu")


@pytest.fixture(scope="module")
def queries(artifacts: Path, scorer: RankingScorer) -> list[RankQuery]:
    """Real users with candidate lists of many sizes, with and without retrieval scores,
    plus the edge cases (no history, unknown recent ids, empty list, a bad request)."""
    users = UserHistoryStore.load(resolve(artifacts) / "users")
    ids = scorer.items.item_ids
    rng = np.random.default_rng(3)
    out = []
    sizes = [200, 500, 1, 7, 200, 33, 2, 500, 120, 64]
    for i, user in enumerate(users.user_ids()[:40]):
        history = users.recent_items(user)[-(5 + 7 * i) :]
        cands = rng.choice(ids, sizes[i % len(sizes)], replace=False)
        scores = rng.standard_normal(len(cands)).astype(np.float32) if i % 3 else None
        out.append(RankQuery(history, cands, scores, [10, 0, 3, 1000][i % 4]))
    unknown = np.array([10**15], np.int64)
    out += [
        RankQuery(np.empty(0, np.int64), ids[:50], None, 10),  # no history
        RankQuery(np.concatenate([unknown, ids[5:9]]), ids[100:180], None, 5),  # unknown recent
        RankQuery(ids[:3], np.empty(0, np.int64), None, 10),  # nothing to rank
        RankQuery(ids[:3], np.concatenate([ids[200:210], unknown]), None, 5),  # fails alone
    ]
    return out


def _alone(scorer: RankingScorer, q: RankQuery) -> Ranked | Exception:
    try:
        return scorer.rank(q.recent_item_ids, q.candidate_ids, q.candidate_scores, q.num_items)
    except Exception as exc:
        return exc


def _assert_same(batched: Ranked | Exception, alone: Ranked | Exception) -> bool:
    """Same ids in the same order and scores equal up to float rounding; True if bitwise."""
    if isinstance(alone, Exception) or isinstance(batched, Exception):
        assert type(batched) is type(alone)
        return True
    np.testing.assert_array_equal(batched.item_ids, alone.item_ids)
    np.testing.assert_allclose(batched.scores, alone.scores, rtol=1e-5, atol=1e-5)
    return bool(np.array_equal(batched.scores, alone.scores))


@pytest.mark.parametrize("size", [2, 8, 32, 64])
def test_rank_many_equals_rank_alone(
    scorer: RankingScorer, queries: list[RankQuery], size: int
) -> None:
    alone = [_alone(scorer, q) for q in queries]
    assert isinstance(alone[-1], UnknownCandidates)
    assert len(alone[-2].item_ids) == 0  # type: ignore[union-attr]
    batched: list[Ranked | Exception] = []
    for start in range(0, len(queries), size):
        batched += scorer.rank_many(queries[start : start + size])
    bitwise = [_assert_same(b, a) for b, a in zip(batched, alone, strict=True)]
    # A pair's score depends only on its own row: in practice the same bits (kept as a
    # count, not an assertion, since BLAS may block a larger matrix differently).
    assert sum(bitwise) >= len(bitwise) // 2


def test_results_are_truncated_and_ordered(scorer: RankingScorer, queries: list[RankQuery]) -> None:
    for q, r in zip(queries[:-1], scorer.rank_many(queries[:-1]), strict=True):
        assert isinstance(r, Ranked)
        n = len(q.candidate_ids) if q.num_items <= 0 else min(q.num_items, len(q.candidate_ids))
        assert len(r.item_ids) == n
        assert np.all(np.diff(r.scores) <= 0)
        assert set(r.item_ids) <= set(q.candidate_ids.tolist())


def test_forward_is_split_into_bounded_chunks(
    scorer: RankingScorer, queries: list[RankQuery], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large batches are cut into forwards of whole requests; results are unchanged."""
    calls: list[int] = []
    forward = scorer._forward

    def counting(batch: list) -> list[np.ndarray]:
        calls.append(sum(len(p.rows) for p in batch))
        return forward(batch)

    monkeypatch.setattr(ranking.scorer, "MAX_PAIRS_PER_FORWARD", 600)
    monkeypatch.setattr(scorer, "_forward", counting)
    batched = scorer.rank_many(queries)
    monkeypatch.undo()
    assert len(calls) > 1 and max(calls) <= 600
    for b, q in zip(batched, queries, strict=True):
        _assert_same(b, _alone(scorer, q))


def test_grouped_requests_finish_on_their_own_scorer(
    artifacts: Path, scorer: RankingScorer, queries: list[RankQuery]
) -> None:
    """A hot reload mid-batch: requests for two loaded versions, interleaved."""
    other = RankingScorer.load(resolve(artifacts), device="cpu")
    other.features.covisitation = None  # a visibly different "version"
    chosen = [scorer if i % 2 else other for i in range(len(queries))]
    results = rank_grouped(list(zip(chosen, queries, strict=True)))
    differs = 0
    for s, q, got in zip(chosen, queries, results, strict=True):
        _assert_same(got, _alone(s, q))
        if s is other and isinstance(got, Ranked) and len(got.item_ids) > 5:
            differs += not np.array_equal(got.item_ids, _alone(scorer, q).item_ids)  # type: ignore[union-attr]
    assert differs > 0  # the two versions really rank differently


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(IncompatibleRanker, match="no CUDA device"):
        resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_scorer_matches_cpu(
    artifacts: Path, scorer: RankingScorer, queries: list[RankQuery]
) -> None:
    gpu = RankingScorer.load(resolve(artifacts), device="cuda")
    assert gpu.device.type == "cuda"
    for on_gpu, on_cpu in zip(gpu.rank_many(queries), scorer.rank_many(queries), strict=True):
        if isinstance(on_cpu, Exception):
            assert type(on_gpu) is type(on_cpu)
            continue
        assert isinstance(on_gpu, Ranked)
        # TF32/other kernels round differently: compare scores, and ids where not near-tied.
        np.testing.assert_allclose(np.sort(on_gpu.scores), np.sort(on_cpu.scores), atol=1e-3)
        overlap = len(set(on_gpu.item_ids.tolist()) & set(on_cpu.item_ids.tolist()))
        assert overlap >= len(on_cpu.item_ids) - 1

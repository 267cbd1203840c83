"""The ranking server with micro-batching on: concurrent Rank calls over real gRPC get what
the scorer gives each of them alone, and bad input still gets its own clear status."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc import aio
from prometheus_client import REGISTRY

from ranking.scorer import RankingScorer
from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore
from recsys.v1 import ranking_pb2, ranking_pb2_grpc
from services.cli import build_parser
from services.commands import make_app
from services.metrics import BATCH_SIZE
from services.ranking_service import RankingApp, RankingConfig
from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def batched(artifacts: Path) -> Iterator[Cluster]:
    c = Cluster()
    c.start("ranking", RankingApp(RankingConfig(artifacts, batching=True, device="cpu")))
    yield c
    c.close()


def _requests(artifacts: Path, count: int) -> list[ranking_pb2.RankRequest]:
    """Different users, history lengths, candidate counts; some with retrieval scores."""
    version = resolve(artifacts)
    users = UserHistoryStore.load(version / "users")
    ids = RankingScorer.load(version).items.item_ids
    rng = np.random.default_rng(11)
    out = []
    for i, user in enumerate(users.user_ids()[:count]):
        cands = rng.choice(ids, [200, 500, 3, 57][i % 4], replace=False)
        out.append(
            ranking_pb2.RankRequest(
                user_id=str(user),
                recent_item_ids=users.recent_items(user)[-(3 + i) :].tolist(),
                candidate_item_ids=cands.tolist(),
                candidate_scores=rng.uniform(-1, 1, len(cands)).tolist() if i % 2 else [],
                num_items=[10, 0, 2, 25][i % 4],
            )
        )
    return out


async def _call_all(
    address: str, requests: list[ranking_pb2.RankRequest]
) -> list[ranking_pb2.RankResponse | grpc.StatusCode]:
    async with aio.insecure_channel(address) as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)

        async def one(r: ranking_pb2.RankRequest) -> ranking_pb2.RankResponse | grpc.StatusCode:
            try:
                return await stub.Rank(r, timeout=30)
            except aio.AioRpcError as err:
                return err.code()

        return await asyncio.gather(*(one(r) for r in requests))


def _batches_observed() -> tuple[float, float]:
    """(batches dispatched, requests in them) so far, from the service's histogram."""
    samples = {s.name: s.value for s in BATCH_SIZE.labels("ranking")._samples()}
    return samples.get("_count", 0.0), samples.get("_sum", 0.0)


def _inline_calls() -> float:
    return REGISTRY.get_sample_value("recserve_inline_calls_total", {"service": "ranking"}) or 0.0


def test_concurrent_calls_equal_the_unbatched_answers(batched: Cluster, artifacts: Path) -> None:
    requests = _requests(artifacts, 48)
    scorer = RankingScorer.load(resolve(artifacts))
    before = _batches_observed()
    # Sent at once from one client loop: they reach the server together and queue while
    # the first batch runs (no sleeps; the gathering is the server's).
    responses = asyncio.run(_call_all(batched.address("ranking"), requests))
    batches, members = (a - b for a, b in zip(_batches_observed(), before, strict=True))
    assert members == len(requests)
    # Batches, not a string of lone calls: with inline lone calls on, calls that queue
    # behind an inline one must switch to the batched path (services/batching.py).
    assert batches <= len(requests) // 2
    for request, response in zip(requests, responses, strict=True):
        assert isinstance(response, ranking_pb2.RankResponse), response
        scores = (
            np.asarray(request.candidate_scores, np.float32) if request.candidate_scores else None
        )
        alone = scorer.rank(
            np.asarray(request.recent_item_ids, np.int64),
            np.asarray(request.candidate_item_ids, np.int64),
            scores,
            request.num_items,
        )
        assert list(response.item_ids) == alone.item_ids.tolist()
        np.testing.assert_allclose(response.scores, alone.scores, rtol=1e-5, atol=1e-5)


def test_calls_one_at_a_time_are_computed_inline(artifacts: Path) -> None:
    # A fresh server: no concurrency seen yet, so nothing holds it in batch mode.
    cluster = Cluster()
    cluster.start("ranking", RankingApp(RankingConfig(artifacts, batching=True, device="cpu")))
    try:
        before = _inline_calls()
        with grpc.insecure_channel(cluster.address("ranking")) as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            for request in _requests(artifacts, 20):
                assert stub.Rank(request, timeout=30).item_ids
        # Each call arrives after the previous one answered: every one skips the executor
        # (the settle after an inline call must not mistake the call's own wrap-up for
        # concurrency).
        assert _inline_calls() - before == 20
    finally:
        cluster.close()


def test_bad_requests_in_a_batch_fail_alone(batched: Cluster, artifacts: Path) -> None:
    good = _requests(artifacts, 12)
    unknown = ranking_pb2.RankRequest(
        user_id="u", recent_item_ids=[1], candidate_item_ids=[10**15, *good[0].candidate_item_ids]
    )
    mismatch = ranking_pb2.RankRequest(
        user_id="u", candidate_item_ids=good[0].candidate_item_ids[:5], candidate_scores=[1.0]
    )
    results = asyncio.run(_call_all(batched.address("ranking"), [*good, unknown, mismatch]))
    assert all(isinstance(r, ranking_pb2.RankResponse) for r in results[:-2])
    assert results[-2] == grpc.StatusCode.NOT_FOUND
    assert results[-1] == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_flags_reach_the_service(artifacts: Path) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "ranking",
            "--artifacts",
            str(artifacts),
            "--batching",
            "on",
            "--device",
            "cpu",
            "--batch-max",
            "8",
            "--batch-wait-ms",
            "1.5",
        ]
    )
    app = make_app(args)
    assert isinstance(app, RankingApp)
    assert (app.config.batching, app.config.device, app.config.batch_max) == (True, "cpu", 8)
    assert app.config.batch_wait_ms == 1.5
    defaults = make_app(build_parser().parse_args(["serve", "ranking"]))
    assert isinstance(defaults, RankingApp) and defaults.config.device == "auto"

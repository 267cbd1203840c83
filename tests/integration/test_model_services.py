"""Retrieval, ranking and tagging servers called directly through their stubs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from evaluation.harness import RANKING_CANDIDATES
from ranking.scorer import RankingScorer
from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore
from recdata.items import ItemTable
from recsys.v1 import (
    common_pb2,
    ranking_pb2,
    ranking_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from retrieval.retriever import Retriever
from services.ranking_service import RankingApp, RankingConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.tagging_service import TaggingApp, TaggingConfig
from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(artifacts: Path) -> Iterator[Cluster]:
    c = Cluster()
    c.start("retrieval", RetrievalApp(RetrievalConfig(artifacts, max_k=500)))
    c.start("ranking", RankingApp(RankingConfig(artifacts)))
    c.start("tagging", TaggingApp(TaggingConfig(artifacts)))
    yield c
    c.close()


@pytest.fixture(scope="module")
def items(artifacts: Path) -> ItemTable:
    return ItemTable.load(artifacts / "items")


@pytest.fixture
def retrieval(channels: dict[str, grpc.Channel]) -> retrieval_pb2_grpc.RetrievalServiceStub:
    return retrieval_pb2_grpc.RetrievalServiceStub(channels["retrieval"])


@pytest.fixture
def ranking(channels: dict[str, grpc.Channel]) -> ranking_pb2_grpc.RankingServiceStub:
    return ranking_pb2_grpc.RankingServiceStub(channels["ranking"])


@pytest.fixture
def tagging(channels: dict[str, grpc.Channel]) -> tagging_pb2_grpc.TaggingServiceStub:
    return tagging_pb2_grpc.TaggingServiceStub(channels["tagging"])


def test_retrieve_exact_k_with_filters(
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub, items: ItemTable
) -> None:
    recent = items.item_ids[10:15].tolist()
    excluded = items.item_ids[:300].tolist()
    dropped = items.category_names[0]
    response = retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            user_id="u1",
            recent_item_ids=recent,
            k=150,
            filter=common_pb2.ItemFilter(exclude_item_ids=excluded, exclude_categories=[dropped]),
        ),
        timeout=10,
    )
    ids = np.array(response.item_ids)
    assert len(ids) == 150 and len(set(ids.tolist())) == 150
    assert not set(ids.tolist()) & set(excluded)
    rows, known = items.rows_of(ids)
    assert known.all()
    assert dropped not in {items.category_names[c] for c in items.categories[rows]}
    assert list(response.scores) == sorted(response.scores, reverse=True)
    assert not response.exhausted


def test_retrieve_returns_all_eligible_when_fewer_than_k(
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub, items: ItemTable
) -> None:
    category = items.category_names[int(np.argmin(np.bincount(items.categories)))]
    in_category = int((items.categories == items.category_names.index(category)).sum())
    response = retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            user_id="u1",
            recent_item_ids=items.item_ids[:3].tolist(),
            k=in_category + 50,
            filter=common_pb2.ItemFilter(include_categories=[category]),
        ),
        timeout=10,
    )
    assert len(response.item_ids) == in_category
    assert response.exhausted
    assert -1 not in response.item_ids


def test_retrieve_rejects_k_over_the_maximum(
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        retrieval.Retrieve(retrieval_pb2.RetrieveRequest(user_id="u1", k=501), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "k:" in info.value.details()


def test_rank_orders_and_truncates(
    ranking: ranking_pb2_grpc.RankingServiceStub, items: ItemTable
) -> None:
    candidates = items.item_ids[100:300].tolist()
    response = ranking.Rank(
        ranking_pb2.RankRequest(
            user_id="u1",
            recent_item_ids=items.item_ids[:5].tolist(),
            candidate_item_ids=candidates,
            num_items=25,
        ),
        timeout=10,
    )
    assert len(response.item_ids) == 25
    assert set(response.item_ids) <= set(candidates)
    assert list(response.scores) == sorted(response.scores, reverse=True)
    assert response.model_version


def test_served_retrieve_and_rank_equal_the_evaluation_path(
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
    ranking: ranking_pb2_grpc.RankingServiceStub,
    artifacts: Path,
    items: ItemTable,
) -> None:
    """Real held-out users (their stored history without its last event, as evaluation
    builds them): Retrieve over gRPC returns the candidates evaluation ranked
    (Retriever.retrieve_rows_many, history excluded) with their two-tower scores, and Rank
    over gRPC gives every candidate the logit of the evaluation path (FeatureBuilder.build
    and the loaded model, as `rerank` computes it), so the manifest's measured quality is
    what these servers answer. Catches a service or scorer that drops, truncates (e.g. to
    the newest item) or reorders recent_item_ids, or loses the candidate scores."""
    version_dir = resolve(artifacts)
    users = UserHistoryStore.load(version_dir / "users")
    sequences = [users.recent_items(u) for u in users.user_ids()[:12]]
    histories = [items.rows_of(s[:-1])[0] for s in sequences if len(s) >= 3]
    retriever = Retriever.load(version_dir, device="cpu")
    candidates, scores = retriever.retrieve_rows_many(histories, RANKING_CANDIDATES)
    scorer = RankingScorer.load(version_dir, device="cpu")
    with torch.inference_mode():
        batch = scorer.features.build(histories, candidates, scores)
        expected = scorer.model(*batch.tensors()).numpy().reshape(candidates.shape)
    for i, history in enumerate(histories):
        recent = items.item_ids[history].tolist()
        found = retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(
                user_id=f"held-out-{i}",
                recent_item_ids=recent,
                k=RANKING_CANDIDATES,
                filter=common_pb2.ItemFilter(exclude_item_ids=sorted(set(recent))),
            ),
            timeout=10,
        )
        assert list(found.item_ids) == items.item_ids[candidates[i]].tolist()
        np.testing.assert_allclose(found.two_tower_scores, scores[i], rtol=1e-5, atol=1e-5)
        ranked = ranking.Rank(
            ranking_pb2.RankRequest(
                user_id=f"held-out-{i}",
                recent_item_ids=recent,
                candidate_item_ids=found.item_ids,
                candidate_scores=found.two_tower_scores,
                num_items=0,  # every candidate, ordered
            ),
            timeout=10,
        )
        position = {item: p for p, item in enumerate(found.item_ids)}
        order = [position[item] for item in ranked.item_ids]
        assert sorted(order) == list(range(RANKING_CANDIDATES))
        # float32 on the wire; CUDA (device auto) rounds a little differently from CPU
        np.testing.assert_allclose(ranked.scores, expected[i, order], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("fields", "code", "needle"),
    [
        (
            {"candidate_item_ids": [1, 2], "candidate_scores": [0.5]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidate_scores",
        ),
        ({"candidate_item_ids": [999_999_999]}, grpc.StatusCode.NOT_FOUND, "candidate_item_ids"),
        (
            {"candidate_item_ids": [100001, 100002], "candidate_scores": [0.5, float("nan")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidate_scores",
        ),
        ({"candidate_item_ids": [-1]}, grpc.StatusCode.INVALID_ARGUMENT, "candidate_item_ids"),
        (
            {"candidate_item_ids": [100001, 100002, 100001]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate",
        ),
        (
            {"candidate_item_ids": list(range(1, 2002))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidate_item_ids",
        ),
        (  # far outside [-1, 1] the ranker's logits overflow (NaN scores once returned OK)
            {"candidate_item_ids": [100001, 100002], "candidate_scores": [1e15, -1e15]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidate_scores",
        ),
        (
            {"candidate_item_ids": [100001], "user_id": "u" * 257},
            grpc.StatusCode.INVALID_ARGUMENT,
            "user_id",
        ),
    ],
)
def test_rank_bad_input(
    ranking: ranking_pb2_grpc.RankingServiceStub, fields: dict, code: grpc.StatusCode, needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        ranking.Rank(ranking_pb2.RankRequest(**{"user_id": "u1", **fields}), timeout=10)
    assert info.value.code() == code
    assert needle in info.value.details()


def test_generate_tags_for_new_products(tagging: tagging_pb2_grpc.TaggingServiceStub) -> None:
    """A product named after a tag (the vocabulary's most frequent one, which the
    catalogue's titles spell out most often) gets that tag; catches a service that answers
    every product with no tags, or with another product's."""
    vocabulary = tagging.ListTags(tagging_pb2.ListTagsRequest(), timeout=10).tags
    tag = vocabulary[0]
    response = tagging.GenerateTags(
        tagging_pb2.GenerateTagsRequest(
            items=[
                tagging_pb2.ProductText(title=f"{tag} {tag} product", description=f"very {tag}"),
                tagging_pb2.ProductText(title="plain thing"),
            ],
            max_tags=3,
            min_confidence=0.01,
        ),
        timeout=10,
    )
    assert len(response.results) == 2
    assert all(len(r.tags) <= 3 for r in response.results)
    assert tag in [t.name for t in response.results[0].tags]
    confidences = [t.confidence for t in response.results[0].tags]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (tagging_pb2.GenerateTagsRequest(), "items"),
        (
            tagging_pb2.GenerateTagsRequest(items=[tagging_pb2.ProductText(title="x")] * 257),
            "items",
        ),
        (
            tagging_pb2.GenerateTagsRequest(items=[tagging_pb2.ProductText(title="x" * 5000)]),
            "items[0].title",
        ),
        (
            tagging_pb2.GenerateTagsRequest(
                items=[tagging_pb2.ProductText(title="x")], min_confidence=1.5
            ),
            "min_confidence",
        ),
    ],
)
def test_generate_tags_limits(
    tagging: tagging_pb2_grpc.TaggingServiceStub,
    request_: tagging_pb2.GenerateTagsRequest,
    needle: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        tagging.GenerateTags(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


def test_get_item_tags_reports_unknown_ids(
    tagging: tagging_pb2_grpc.TaggingServiceStub, items: ItemTable
) -> None:
    known = items.item_ids[:4].tolist()
    response = tagging.GetItemTags(
        tagging_pb2.GetItemTagsRequest(item_ids=[*known, 987_654_321], max_tags=2), timeout=10
    )
    assert [i.item_id for i in response.items] == known
    assert list(response.unknown_item_ids) == [987_654_321]
    assert all(len(i.tags) <= 2 for i in response.items)


@pytest.mark.parametrize(
    ("service", "method"),
    [
        ("retrieval", "/recsys.v1.RetrievalService/Retrieve"),
        ("ranking", "/recsys.v1.RankingService/Rank"),
        ("tagging", "/recsys.v1.TaggingService/GenerateTags"),
    ],
)
@pytest.mark.parametrize("body", [b"\x0a\x02\xff\xfe", b"\xff\xff\xff"])
def test_a_request_that_does_not_parse_is_invalid_argument(
    cluster: Cluster, service: str, method: str, body: bytes
) -> None:
    """Bad UTF-8 in a string field, or a corrupt wire format: INVALID_ARGUMENT, not UNKNOWN."""
    with grpc.insecure_channel(cluster.address(service)) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(body, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in info.value.details()

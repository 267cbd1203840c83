"""Retrieval, ranking and tagging servers called directly through their stubs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

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
from services.ranking_service import RankingApp, RankingConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.tagging_service import TaggingApp, TaggingConfig
from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def stages(artifacts: Path) -> Iterator[Cluster]:
    c = Cluster()
    c.start("retrieval", RetrievalApp(RetrievalConfig(artifacts, max_k=500)))
    c.start("ranking", RankingApp(RankingConfig(artifacts)))
    c.start("tagging", TaggingApp(TaggingConfig(artifacts)))
    yield c
    c.close()


@pytest.fixture(scope="module")
def items(artifacts: Path) -> ItemTable:
    return ItemTable.load(artifacts / "items")


def _stub(c: Cluster, name: str, stub_class: type) -> object:
    return stub_class(grpc.insecure_channel(c.address(name)))


def test_retrieve_exact_k_with_filters(stages: Cluster, items: ItemTable) -> None:
    stub = _stub(stages, "retrieval", retrieval_pb2_grpc.RetrievalServiceStub)
    recent = items.item_ids[10:15].tolist()
    excluded = items.item_ids[:300].tolist()
    dropped = items.category_names[0]
    response = stub.Retrieve(
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


def test_retrieve_returns_all_eligible_when_fewer_than_k(stages: Cluster, items: ItemTable) -> None:
    stub = _stub(stages, "retrieval", retrieval_pb2_grpc.RetrievalServiceStub)
    category = items.category_names[int(np.argmin(np.bincount(items.categories)))]
    in_category = int((items.categories == items.category_names.index(category)).sum())
    response = stub.Retrieve(
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


def test_retrieve_rejects_k_over_the_maximum(stages: Cluster) -> None:
    stub = _stub(stages, "retrieval", retrieval_pb2_grpc.RetrievalServiceStub)
    with pytest.raises(grpc.RpcError) as info:
        stub.Retrieve(retrieval_pb2.RetrieveRequest(user_id="u1", k=501), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "k:" in info.value.details()


def test_rank_orders_and_truncates(stages: Cluster, items: ItemTable) -> None:
    stub = _stub(stages, "ranking", ranking_pb2_grpc.RankingServiceStub)
    candidates = items.item_ids[100:300].tolist()
    response = stub.Rank(
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
def test_rank_bad_input(stages: Cluster, fields: dict, code: grpc.StatusCode, needle: str) -> None:
    stub = _stub(stages, "ranking", ranking_pb2_grpc.RankingServiceStub)
    with pytest.raises(grpc.RpcError) as info:
        stub.Rank(ranking_pb2.RankRequest(**{"user_id": "u1", **fields}), timeout=10)
    assert info.value.code() == code
    assert needle in info.value.details()


def test_generate_tags_for_new_products(stages: Cluster) -> None:
    stub = _stub(stages, "tagging", tagging_pb2_grpc.TaggingServiceStub)
    vocabulary = stub.ListTags(tagging_pb2.ListTagsRequest(), timeout=10).tags
    tag = vocabulary[0]
    response = stub.GenerateTags(
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
    stages: Cluster, request_: tagging_pb2.GenerateTagsRequest, needle: str
) -> None:
    stub = _stub(stages, "tagging", tagging_pb2_grpc.TaggingServiceStub)
    with pytest.raises(grpc.RpcError) as info:
        stub.GenerateTags(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


def test_get_item_tags_reports_unknown_ids(stages: Cluster, items: ItemTable) -> None:
    stub = _stub(stages, "tagging", tagging_pb2_grpc.TaggingServiceStub)
    known = items.item_ids[:4].tolist()
    response = stub.GetItemTags(
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
    stages: Cluster, service: str, method: str, body: bytes
) -> None:
    """Bad UTF-8 in a string field, or a corrupt wire format: INVALID_ARGUMENT, not UNKNOWN."""
    with grpc.insecure_channel(stages.address(service)) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(body, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in info.value.details()

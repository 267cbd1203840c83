"""A catalogue feed across the four services: a product added through CatalogService is
recommended by the next Recommend call with its title and generated tags, ranked (not
degraded), and never again once deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recsys.v1 import catalog_pb2, catalog_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from tests.integration.cluster import Cluster, start_all

NEW_ID = 7_000_001
FEED_ORDER = ("tagging", "ranking", "retrieval", "gateway")


@pytest.fixture(scope="module")
def cluster(artifacts: Path) -> Iterator[Cluster]:
    cluster = start_all(artifacts.parent, admin_port=0)
    yield cluster
    cluster.close()


def _catalog(channels: dict[str, grpc.Channel], name: str) -> catalog_pb2_grpc.CatalogServiceStub:
    return catalog_pb2_grpc.CatalogServiceStub(channels[name])


def _recommend(
    channels: dict[str, grpc.Channel], **fields: object
) -> gateway_pb2.RecommendResponse:
    stub = gateway_pb2_grpc.RecommendationServiceStub(channels["gateway"])
    request = gateway_pb2.RecommendRequest(user_id="u000001", num_items=10, **fields)  # type: ignore[arg-type]
    return stub.Recommend(request, timeout=10)


def test_new_product_is_recommended_with_tags_then_deleted(
    channels: dict[str, grpc.Channel],
) -> None:
    item = catalog_pb2.CatalogItem(
        item_id=NEW_ID,
        title="waterproof trail running shoes",
        description="light, breathable, for wet trails",
        category="outdoor footwear",
        brand="Ridgeline",
        price=89.0,
    )
    tagged = _catalog(channels, "tagging").UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=[item]), timeout=30
    )
    assert tagged.inserted == 1 and len(tagged.tags) == 1
    assert tagged.tags[0].item_id == NEW_ID
    item.tags.extend(t.name for t in tagged.tags[0].tags)
    for name in FEED_ORDER[1:]:
        answer = _catalog(channels, name).UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=[item]), timeout=30
        )
        assert answer.inserted == 1, name

    response = _recommend(channels, include_categories=["outdoor footwear"])
    assert [i.item_id for i in response.items] == [NEW_ID]
    shown = response.items[0]
    assert shown.title == item.title and shown.category == "outdoor footwear"
    assert [t.name for t in shown.tags] == [t.name for t in tagged.tags[0].tags][: len(shown.tags)]
    assert not response.ranking_degraded and not response.tagging_degraded

    for name in FEED_ORDER:
        gone = _catalog(channels, name).DeleteItems(
            catalog_pb2.DeleteItemsRequest(item_ids=[NEW_ID]), timeout=30
        )
        assert gone.deleted == 1, name
    assert _recommend(channels, include_categories=["outdoor footwear"]).items == []
    assert NEW_ID not in [i.item_id for i in _recommend(channels).items]


def test_a_live_item_ranking_was_not_told_about_degrades_to_retrieval_order_until_it_is(
    channels: dict[str, grpc.Channel],
) -> None:
    """Fed out of order (retrieval first, ranking not yet): Recommend answers in retrieval
    order with ranking_degraded (ranking does not know the item) instead of failing; once
    ranking gets the item too, the same request is ranked again (not degraded). Catches a
    gateway that fails instead of degrading, or one that stays degraded (or a ranking
    service that does not apply the late upsert)."""
    item = catalog_pb2.CatalogItem(
        item_id=NEW_ID + 1, title="camp stove", category="camp kitchen", price=30.0
    )
    request = catalog_pb2.UpsertItemsRequest(items=[item])
    assert _catalog(channels, "retrieval").UpsertItems(request, timeout=30).inserted == 1
    response = _recommend(channels, include_categories=["camp kitchen"])
    assert [i.item_id for i in response.items] == [NEW_ID + 1]
    assert response.ranking_degraded

    assert _catalog(channels, "ranking").UpsertItems(request, timeout=30).inserted == 1
    response = _recommend(channels, include_categories=["camp kitchen"])
    assert [i.item_id for i in response.items] == [NEW_ID + 1]
    assert not response.ranking_degraded

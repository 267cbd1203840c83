"""The tagging service on loopback: micro-batched GenerateTags, calibrated thresholds,
tags for items added after training (upsert/delete, kept across a reload), and a MiniLM
artifact served end to end."""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from pipeline.train import TrainingConfig, train_all
from recdata.schema import Dataset
from recdata.synthetic import generate
from recsys.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from services.errors import InvalidArgument
from services.tagging_service import CatalogItem, TaggingApp, TaggingConfig
from services.tracing import tracing_with
from tagging.catalog_tags import CatalogTags
from tagging.tagger import Tagger
from tagging.text import product_text
from tests.integration.cluster import Cluster, thread_held

NEW_ITEM = 9_000_001
GENERATE_TAGS = "recsys.v1.TaggingService/GenerateTags"  # span names: service/method
UPSERT_ITEMS = "recsys.v1.CatalogService/UpsertItems"


class CallSignals(SpanProcessor):
    """Events set when the server starts and ends handling a call, through the service's
    own tracing hook (one SERVER span per call). A handler runs on the server's event loop
    from its span's start to its first await, so once `started` is set, any later call is
    handled after the first one reached that await."""

    def __init__(self) -> None:
        self._started: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self._ended: defaultdict[str, threading.Event] = defaultdict(threading.Event)

    def started(self, name: str) -> threading.Event:
        return self._started[name]

    def ended(self, name: str) -> threading.Event:
        return self._ended[name]

    def on_start(self, span: Span, parent_context: object = None) -> None:
        self._started[span.name].set()

    def on_end(self, span: ReadableSpan) -> None:
        self._ended[span.name].set()


@pytest.fixture(scope="module")
def cluster(artifacts: Path) -> Iterator[Cluster]:
    c = Cluster()
    c.start("batched", TaggingApp(TaggingConfig(artifacts, batching=True)))
    c.start("direct", TaggingApp(TaggingConfig(artifacts, batching=False)))
    yield c
    c.close()


def _stub(channels: dict[str, grpc.Channel], name: str) -> tagging_pb2_grpc.TaggingServiceStub:
    return tagging_pb2_grpc.TaggingServiceStub(channels[name])


def _names(response: tagging_pb2.GenerateTagsResponse) -> list[list[str]]:
    return [[t.name for t in r.tags] for r in response.results]


def _requests(vocabulary: list[str]) -> list[tagging_pb2.GenerateTagsRequest]:
    out = []
    for i in range(24):
        a, b = vocabulary[i % len(vocabulary)], vocabulary[(3 * i + 1) % len(vocabulary)]
        items = [tagging_pb2.ProductText(title=f"{a} {b} thing", description=f"very {a}")]
        items += [tagging_pb2.ProductText(title=f"plain item {i}")] * (i % 3)
        out.append(tagging_pb2.GenerateTagsRequest(items=items, max_tags=4))
    return out


def test_concurrent_batched_calls_answer_as_unbatched_ones_at_calibrated_thresholds(
    channels: dict[str, grpc.Channel], artifacts: Path
) -> None:
    tagger = Tagger.load(artifacts / "tagging")
    threshold = dict(zip(tagger.tag_names, tagger.thresholds.tolist(), strict=True))
    batched, direct = _stub(channels, "batched"), _stub(channels, "direct")
    requests = _requests(tagger.tag_names)
    with ThreadPoolExecutor(12) as pool:  # concurrent calls: batches do form
        got = list(pool.map(lambda r: batched.GenerateTags(r, timeout=30), requests))
    for request, response in zip(requests, got, strict=True):
        alone = direct.GenerateTags(request, timeout=30)
        assert _names(response) == _names(alone)
        assert len(response.results) == len(request.items)
        for result in response.results:
            for tag in result.tags:
                assert tag.confidence >= threshold[tag.name] - 1e-6
    # An explicit min_confidence replaces the per-tag thresholds: exactly what the library
    # returns with that cut-off.
    low = tagging_pb2.GenerateTagsRequest(items=requests[4].items, max_tags=50, min_confidence=1e-4)
    lowered = [[t.name for t in r.tags] for r in batched.GenerateTags(low, timeout=30).results]
    texts = [product_text(i.title, i.description, i.category) for i in low.items]
    assert lowered == [[n for n, _ in row] for row in tagger.predict(texts, 50, 1e-4)]


def test_upserted_items_are_tagged_once_and_served_by_get_item_tags(
    cluster: Cluster, channels: dict[str, grpc.Channel], artifacts: Path
) -> None:
    app: TaggingApp = cluster.servers["batched"].app  # type: ignore[assignment]
    stub = _stub(channels, "batched")
    word = Tagger.load(artifacts / "tagging").tag_names[0]
    new = [
        CatalogItem(NEW_ITEM, f"{word} {word} jacket", f"really {word}", "Jackets"),
        CatalogItem(NEW_ITEM + 1, "plain thing"),
    ]
    before = stub.GetItemTags(tagging_pb2.GetItemTagsRequest(item_ids=[NEW_ITEM]), timeout=10)
    assert list(before.unknown_item_ids) == [NEW_ITEM]

    returned = cluster.run(app.upsert_items(new))
    assert len(returned) == 2 and word in [name for name, _ in returned[0]]
    served = stub.GetItemTags(
        tagging_pb2.GetItemTagsRequest(item_ids=[NEW_ITEM, NEW_ITEM + 1], max_tags=8), timeout=10
    )
    assert not served.unknown_item_ids
    assert [(t.name, pytest.approx(t.confidence)) for t in served.items[0].tags] == returned[0]

    # A reload (same or another version) re-tags the added items with the loaded model.
    cluster.run(cluster.servers["batched"].reload(None))
    again = stub.GetItemTags(tagging_pb2.GetItemTagsRequest(item_ids=[NEW_ITEM]), timeout=10)
    assert [t.name for t in again.items[0].tags][:1] == [returned[0][0][0]]

    assert cluster.run(app.delete_items([NEW_ITEM, NEW_ITEM + 1, 77])) == [NEW_ITEM, NEW_ITEM + 1]
    gone = stub.GetItemTags(tagging_pb2.GetItemTagsRequest(item_ids=[NEW_ITEM]), timeout=10)
    assert list(gone.unknown_item_ids) == [NEW_ITEM]
    cluster.run(cluster.servers["batched"].reload(None))
    still_gone = stub.GetItemTags(tagging_pb2.GetItemTagsRequest(item_ids=[NEW_ITEM]), timeout=10)
    assert list(still_gone.unknown_item_ids) == [NEW_ITEM]


def test_deleting_a_trained_catalogue_item_survives_a_reload(
    cluster: Cluster, channels: dict[str, grpc.Channel], artifacts: Path
) -> None:
    app: TaggingApp = cluster.servers["direct"].app  # type: ignore[assignment]
    stub = _stub(channels, "direct")
    any_id = int(CatalogTags.load(artifacts / "tagging").item_ids[0])
    assert cluster.run(app.delete_items([any_id])) == [any_id]
    cluster.run(cluster.servers["direct"].reload(None))
    response = stub.GetItemTags(tagging_pb2.GetItemTagsRequest(item_ids=[any_id]), timeout=10)
    assert list(response.unknown_item_ids) == [any_id]
    cluster.run(app.upsert_items([CatalogItem(any_id, "back again")]))
    response = stub.GetItemTags(tagging_pb2.GetItemTagsRequest(item_ids=[any_id]), timeout=10)
    assert not response.unknown_item_ids


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([CatalogItem(0, "x")], "items[0].item_id"),
        ([CatalogItem(5, "x"), CatalogItem(5, "y")], "items[1].item_id"),
        ([CatalogItem(5, "x" * 5000)], "items[0].title"),
        ([CatalogItem(5, " ", "")], "items[0]"),
        ([CatalogItem(i, "x") for i in range(1, 1100)], "items"),
    ],
)
def test_bad_upserts_name_the_field(cluster: Cluster, items: list, field: str) -> None:
    app: TaggingApp = cluster.servers["direct"].app  # type: ignore[assignment]
    with pytest.raises(InvalidArgument) as err:
        cluster.run(app.upsert_items(items))
    assert err.value.field == field
    with pytest.raises(InvalidArgument, match="item_ids"):
        cluster.run(app.delete_items([-3]))


@pytest.fixture(scope="module")
def minilm_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue-only (tagging) version with the MiniLM encoder, on a small catalogue."""
    full = generate(num_items=300, num_users=10, seed=3)
    dataset = Dataset("synthetic-catalogue", full.items, full.interactions.iloc[:0])
    config = TrainingConfig()
    config.tagger = dataclasses.replace(config.tagger, encoder="minilm", min_support=3)
    return train_all(dataset, tmp_path_factory.mktemp("minilm"), config, lambda _: None)


def test_a_minilm_artifact_is_served(minilm_artifacts: Path) -> None:
    tagger = Tagger.load(minilm_artifacts / "tagging")
    assert tagger.encoder == "minilm"
    c = Cluster()
    try:
        c.start("tagging", TaggingApp(TaggingConfig(minilm_artifacts)))
        with grpc.insecure_channel(c.address("tagging")) as channel:
            stub = tagging_pb2_grpc.TaggingServiceStub(channel)
            vocabulary = list(stub.ListTags(tagging_pb2.ListTagsRequest(), timeout=10).tags)
            assert vocabulary == tagger.tag_names
            request = tagging_pb2.GenerateTagsRequest(
                items=[tagging_pb2.ProductText(title=f"{vocabulary[0]} rain jacket")], max_tags=3
            )
            response = stub.GenerateTags(request, timeout=30)
            assert response.model_version == minilm_artifacts.name
            assert _names(response) == [
                [n for n, _ in tagger.predict([f"{vocabulary[0]} rain jacket"], 3)[0]]
            ]
            app: TaggingApp = c.servers["tagging"].app  # type: ignore[assignment]
            [tags] = c.run(app.upsert_items([CatalogItem(NEW_ITEM, "waterproof rain jacket")]))
            got = stub.GetItemTags(
                tagging_pb2.GetItemTagsRequest(item_ids=[NEW_ITEM], max_tags=8), timeout=10
            )
            assert [t.name for t in got.items[0].tags] == [n for n, _ in tags]
    finally:
        c.close()


def test_big_calls_past_the_queued_product_limit_are_refused(artifacts: Path) -> None:
    """Calls above batch_item_limit go straight to the model threads; past
    max_direct_texts products queued there, RESOURCE_EXHAUSTED at once (not seconds of
    queue ahead of the small calls)."""
    app = TaggingApp(TaggingConfig(artifacts, workers=1, max_direct_texts=16))
    signals = CallSignals()
    c = Cluster()
    try:
        c.start("tagging", app, tracing=tracing_with(signals, "tagging"))
        with grpc.insecure_channel(c.address("tagging")) as channel:
            stub = tagging_pb2_grpc.TaggingServiceStub(channel)
            big = tagging_pb2.GenerateTagsRequest(
                items=[tagging_pb2.ProductText(title=f"walnut desk lamp {i}") for i in range(12)]
            )
            with thread_held(app._executor.pool):  # the one model thread, busy
                first = stub.GenerateTags.future(big, timeout=60)
                # Its handler counts its 12 products and queues them before it yields the
                # loop: the next call is handled with them counted.
                assert signals.started(GENERATE_TAGS).wait(30), "first call never arrived"
                with pytest.raises(grpc.RpcError) as info:
                    stub.GenerateTags(big, timeout=10)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "queued" in info.value.details()
            assert len(first.result(timeout=60).results) == 12
            assert app._direct_texts == 0
            assert len(stub.GenerateTags(big, timeout=60).results) == 12  # free again
    finally:
        c.close()


def test_an_upsert_past_its_deadline_is_applied_and_survives_a_reload(artifacts: Path) -> None:
    """Once tagging an upsert has started it changes the served catalogue; a caller whose
    deadline passes meanwhile gets DEADLINE_EXCEEDED, and the items are then served *and*
    remembered (re-applied by a reload), never served and forgotten."""
    app = TaggingApp(TaggingConfig(artifacts, workers=1))
    signals = CallSignals()
    c = Cluster()
    try:
        c.start("tagging", app, admin_port=0, tracing=tracing_with(signals, "tagging"))
        with grpc.insecure_channel(c.address("tagging")) as channel:
            catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
            stub = tagging_pb2_grpc.TaggingServiceStub(channel)
            item = catalog_pb2.CatalogItem(
                item_id=990_001, title="Walnut Desk Lamp", category="lamps", description="warm"
            )
            with thread_held(app._executor.pool):  # the upsert waits for the thread
                with pytest.raises(grpc.RpcError) as info:
                    catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[item]), timeout=2)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                # The handler ends (cancelled at its deadline) only after the shielded
                # upsert it started has queued its tagging for the held thread.
                assert signals.ended(UPSERT_ITEMS).wait(30), "the upsert handler never ended"
            # The one model thread runs its queue in order: once this no-op has run, so has
            # the upsert's tagging (which writes the served tags from that thread).
            app._executor.pool.submit(lambda: None).result(timeout=60)

            def known() -> bool:
                lookup = stub.GetItemTags(
                    tagging_pb2.GetItemTagsRequest(item_ids=[990_001]), timeout=10
                )
                return not lookup.unknown_item_ids

            assert known()
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=60)
            assert known()
    finally:
        c.close()

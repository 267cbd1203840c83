"""Random, mostly invalid but well-formed requests to every public RPC and the operator
RPCs of real servers on loopback: a caller's mistake is answered with a status naming it
(INVALID_ARGUMENT, NOT_FOUND, ...), never INTERNAL or UNKNOWN (a crash in a handler) or
DEADLINE_EXCEEDED (a hang); an accepted request gets a sane answer; and after every
request known-good ones still succeed (nothing crashed or was corrupted).

Each request has a few fields (sometimes all) drawn from anything — int64 extremes,
unknown and repeated ids, lists past every limit, empty, huge and non-ASCII strings,
NaN/inf floats, parallel lists of different lengths — and the others valid, so a bad
field gets past the checks of the others to its own, and valid requests reach the models.
Sequential calls run inline on the servers' loops; the concurrent test sends bursts, which
the micro-batchers serve together, so a bad request also shares batches with good ones.
`pytest --hypothesis-show-statistics` shows how far requests got (status and field).
The suite's examples are fixed; a longer local hunt:
`HYPOTHESIS_PROFILE=hunt FUZZ_EXAMPLES=2000 pytest tests/integration/test_request_fuzz.py`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import event, given, settings
from hypothesis import strategies as st

from recdata.artifacts import resolve
from recdata.feature_store import UserHistoryStore
from recdata.items import ItemTable
from recsys.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from tests.integration.cluster import Cluster, start_all

TIMEOUT = 10.0  # per call; DEADLINE_EXCEEDED within it is a hang, itself a finding
SERVERS = ("gateway", "retrieval", "ranking", "tagging")
FEED_ORDER = ("tagging", "ranking", "retrieval", "gateway")  # as a catalogue feed calls them
# A caller's mistake or a limit reached; anything else (INTERNAL, UNKNOWN, UNAVAILABLE,
# DEADLINE_EXCEEDED, ...) is the server's fault.
CALLER_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
DEFAULT_TAGS = 5  # TaggingConfig.default_max_tags: max_tags 0
DEFAULT_K = 200  # RetrievalConfig.default_k: k 0

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGE_IDS = [INT64_MIN, INT64_MIN + 1, -(2**31), -1, 0, 1, 2**31, 2**53 + 1, INT64_MAX - 1]
EDGE_IDS += [INT64_MAX, 999_999_999]
# New ids catalogue upserts add (so the live catalogue stays small). Requests use them
# too: live items, deleted ones, or never added, depending on what ran before.
FUZZ_IDS = [9_000_000_000 + i for i in range(24)] + [INT64_MAX - 1, INT64_MAX]
# Bulk upserts (up to the 1000-per-call limit) reuse this block of ids, so the live
# catalogue stays bounded however many run; big enough to make tagging compact its overlay.
BULK_IDS = 9_200_000_000
CHANGEABLE = 24  # the catalogue's last items may be changed or deleted (Pool.changeable)
EDGE_COUNTS = [INT32_MIN, -1, 0, 1, 2, 49, 50, 51, 99, 100, 101, 199, 200, 201, 255, 256]
EDGE_COUNTS += [257, 499, 500, 501, 999, 1000, 1001, 1999, 2000, 2001, INT32_MAX]
EDGE_FLOATS = [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, -1.0, 1.0, 1.001]
EDGE_FLOATS += [1.0011, -1.0011, 1.5, 0.5, 1e-45, -1e-45, 3.4e38, -3.4e38, 89.0]
WEIRD_TEXT = ["", " ", "\t\n", "\x00", "\x7f", "\u200b", "\ufeff", "\u202e", "日本語の商品"]
WEIRD_TEXT += ["😀", "🏳️‍🌈 flag", "a\u0301", "\U0010ffff", "null", "-", "--", "LATEST", ".."]

# Printable and not blank: passes every text check (user ids, names, titles).
VALID_TEXT = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S"), include_characters=" "),
    min_size=1,
    max_size=30,
).filter(str.strip)


def _long_text(limit: int) -> st.SearchStrategy[str]:
    """Valid text up to `limit` characters, long ones too (the limit itself included)."""
    return st.one_of(
        VALID_TEXT,
        st.builds(
            lambda word, n: ((word.strip() + " ") * n)[:n].strip() or word,
            VALID_TEXT,
            st.one_of(st.integers(31, limit), st.just(limit)),
        ),
    )


STRINGS = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=24),
    st.sampled_from(WEIRD_TEXT),
    # Past every limit (200, 256, 2000, 4096 characters), ASCII or multi-byte.
    st.builds(
        lambda unit, n: unit * n,
        st.sampled_from(["x", "é", "😀", " ", "ab "]),
        st.integers(190, 5000),
    ),
)
COUNTS = st.one_of(st.sampled_from(EDGE_COUNTS), st.integers(INT32_MIN, INT32_MAX))
FLOATS = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(width=32))
TWO_TOWER_SCORES = st.floats(-1.0, 1.0, width=32)  # inner products of unit vectors

# Per field: (valid values, anything).
Fields = dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]
Draw = Callable[..., Any]  # a composite strategy's `draw`


@dataclass(frozen=True)
class Pool:
    """Real values of the loaded artifact, so requests also get past validation."""

    item_ids: list[int]
    categories: list[str]
    users: list[str]

    @property
    def changeable(self) -> list[int]:
        """Ids catalogue changes may use: new ones, and trained items no known-good
        request relies on (those read the first items)."""
        return FUZZ_IDS + self.item_ids[-CHANGEABLE:]


def _clamped(value: int) -> int:
    return min(max(value, INT64_MIN), INT64_MAX)


def _some_ids(pool: Pool, max_size: int = 20) -> st.SearchStrategy[list[int]]:
    """Valid id lists: catalogue ids, and now and then one this module upserts."""
    return st.lists(
        st.one_of(*[st.sampled_from(pool.item_ids)] * 3, st.sampled_from(FUZZ_IDS)),
        max_size=max_size,
    )


def _id_lists(pool: Pool, huge: int = 3000) -> st.SearchStrategy[list[int]]:
    """Short lists of any int64 (repeats too), or long ones up to `huge`: real ids cycled
    (duplicates past the catalogue size) or consecutive ids from an edge."""
    any_id = st.one_of(
        st.sampled_from(pool.item_ids),
        st.sampled_from(EDGE_IDS + FUZZ_IDS),
        st.integers(INT64_MIN, INT64_MAX),
    )
    short = st.lists(any_id, max_size=12)
    known_run = st.builds(
        lambda n, offset: [pool.item_ids[(offset + i) % len(pool.item_ids)] for i in range(n)],
        st.integers(1, huge),
        st.integers(0, len(pool.item_ids) - 1),
    )
    edge_run = st.builds(
        lambda n, start: [_clamped(start + i) for i in range(n)],
        st.integers(1, huge),
        st.sampled_from([*EDGE_IDS, pool.item_ids[0]]),
    )
    return st.one_of(short, short.map(lambda ids: ids + ids), known_run, edge_run)


def _valid_names(pool: Pool) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(pool.categories), VALID_TEXT)  # unknown ones too


def _names(pool: Pool) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(pool.categories), STRINGS)


def _name_lists(pool: Pool) -> tuple[st.SearchStrategy[list[str]], st.SearchStrategy[list[str]]]:
    wild = st.one_of(
        st.lists(_names(pool), max_size=4),
        st.builds(lambda name, n: [name] * n, _names(pool), st.integers(95, 130)),  # limit 100
    )
    return st.lists(_valid_names(pool), max_size=2), wild


def _users(pool: Pool, required: bool = True) -> tuple[st.SearchStrategy[str], ...]:
    valid = st.one_of(st.sampled_from(pool.users), VALID_TEXT)  # an unknown user: cold start
    return (valid if required else st.one_of(st.just(""), valid)), st.one_of(
        st.sampled_from(pool.users), STRINGS
    )


def _draw(draw: Draw, fields: Fields) -> dict[str, Any]:
    """Every field valid except a few chosen at random, drawn from anything."""
    names = sorted(fields)
    wild = draw(
        # Mostly one or two wild fields (a request gets far), now and then all of them.
        st.one_of(*[st.sets(st.sampled_from(names), max_size=2)] * 3, st.just(set(names))),
        label="wild fields",
    )
    return {name: draw(fields[name][name in wild], label=name) for name in names}


# --- requests ------------------------------------------------------------------------------


@st.composite
def _recommend_requests(draw: Draw, pool: Pool) -> gateway_pb2.RecommendRequest:
    fields: Fields = {
        "user_id": _users(pool),
        "recent_item_ids": (_some_ids(pool), _id_lists(pool)),
        "num_items": (st.integers(1, 50), COUNTS),
        "exclude_item_ids": (_some_ids(pool, 50), _id_lists(pool)),
        "include_categories": _name_lists(pool),
        "exclude_categories": _name_lists(pool),
        "allow_seen_items": (st.booleans(), st.booleans()),
    }
    return gateway_pb2.RecommendRequest(**_draw(draw, fields))


@st.composite
def _retrieve_requests(draw: Draw, pool: Pool) -> retrieval_pb2.RetrieveRequest:
    fields: Fields = {
        "user_id": _users(pool, required=False),
        "recent_item_ids": (_some_ids(pool), _id_lists(pool)),
        "k": (st.integers(0, 1000), COUNTS),
        "exclude_item_ids": (_some_ids(pool, 50), _id_lists(pool)),
        "include_categories": _name_lists(pool),
        "exclude_categories": _name_lists(pool),
    }
    values = _draw(draw, fields)
    filter_ = common_pb2.ItemFilter(
        exclude_item_ids=values.pop("exclude_item_ids"),
        include_categories=values.pop("include_categories"),
        exclude_categories=values.pop("exclude_categories"),
    )
    return retrieval_pb2.RetrieveRequest(filter=filter_, **values)


@st.composite
def _rank_requests(draw: Draw, pool: Pool) -> ranking_pb2.RankRequest:
    fields: Fields = {
        "user_id": _users(pool, required=False),
        "recent_item_ids": (_some_ids(pool), _id_lists(pool)),
        # Distinct ids the scorer may know (upserted ones too), or anything.
        "candidate_item_ids": (
            _some_ids(pool, 300).map(lambda ids: list(dict.fromkeys(ids))),
            _id_lists(pool),
        ),
        "num_items": (st.integers(0, 300), COUNTS),
        "candidate_scores": (st.just("valid"), st.just("wild")),  # drawn below, by length
    }
    values = _draw(draw, fields)
    n = len(values["candidate_item_ids"])
    if values["candidate_scores"] == "wild":
        scores = st.one_of(
            st.lists(st.one_of(TWO_TOWER_SCORES, FLOATS), min_size=n, max_size=n),
            st.lists(FLOATS, max_size=n + 3),  # lengths that do not match
        )
    else:
        scores = st.one_of(st.just([]), st.lists(TWO_TOWER_SCORES, min_size=n, max_size=n))
    values["candidate_scores"] = draw(scores, label="candidate_scores")
    return ranking_pb2.RankRequest(**values)


@st.composite
def _generate_tags_requests(draw: Draw, pool: Pool) -> tagging_pb2.GenerateTagsRequest:
    valid = st.builds(
        tagging_pb2.ProductText,
        title=_long_text(4096),
        description=st.one_of(st.just(""), _long_text(4096)),
        category=st.one_of(st.just(""), _valid_names(pool)),
    )
    anything = st.builds(
        tagging_pb2.ProductText, title=STRINGS, description=STRINGS, category=_names(pool)
    )
    fields: Fields = {
        "items": (
            # Up to 8 go through the micro-batcher, more straight to the model threads.
            st.one_of(
                st.lists(valid, min_size=1, max_size=6), st.lists(valid, min_size=9, max_size=40)
            ),
            st.one_of(
                st.lists(st.one_of(valid, anything), max_size=6),
                st.builds(lambda p, n: [p] * n, valid, st.integers(250, 300)),  # limit 256
            ),
        ),
        "max_tags": (st.integers(0, 50), COUNTS),
        "min_confidence": (st.floats(0.0, 1.0, width=32), FLOATS),
    }
    return tagging_pb2.GenerateTagsRequest(**_draw(draw, fields))


@st.composite
def _get_item_tags_requests(draw: Draw, pool: Pool) -> tagging_pb2.GetItemTagsRequest:
    fields: Fields = {
        "item_ids": (
            st.one_of(_some_ids(pool, 30), st.lists(st.integers(1, INT64_MAX), max_size=5)),
            st.one_of(_id_lists(pool), _id_lists(pool, huge=5100)),  # limit 5000
        ),
        "max_tags": (st.integers(0, 50), COUNTS),
    }
    return tagging_pb2.GetItemTagsRequest(**_draw(draw, fields))


@st.composite
def _catalog_items(draw: Draw, pool: Pool) -> catalog_pb2.CatalogItem:
    fields: Fields = {
        "item_id": (st.sampled_from(pool.changeable), st.integers(INT64_MIN, 0)),
        "title": (_long_text(2000), STRINGS),
        "description": (st.one_of(st.just(""), _long_text(2000)), STRINGS),
        "category": (_valid_names(pool), _names(pool)),
        "brand": (st.one_of(st.just(""), _long_text(2000)), STRINGS),
        "price": (st.floats(0.0, 1e6, width=32), FLOATS),
        "tags": (
            st.lists(VALID_TEXT, max_size=4),
            st.one_of(
                st.lists(STRINGS, max_size=4),
                st.builds(lambda tag, n: [tag] * n, VALID_TEXT, st.integers(99, 120)),  # 100
            ),
        ),
    }
    if not draw(st.booleans(), label="wild item"):
        return catalog_pb2.CatalogItem(**{f: draw(s[0], label=f) for f, s in fields.items()})
    return catalog_pb2.CatalogItem(**_draw(draw, fields))


@st.composite
def _upsert_requests(draw: Draw, pool: Pool) -> catalog_pb2.UpsertItemsRequest:
    valid = _catalog_items(pool).filter(lambda item: item.item_id > 0)
    over_limit = st.builds(  # over 1000 per call, distinct valid ids: refused as a whole
        lambda n: [
            catalog_pb2.CatalogItem(item_id=9_100_000_000 + i, title="trowel", category="x")
            for i in range(n)
        ],
        st.integers(1001, 1100),
    )
    bulk = st.builds(
        lambda n, start, category: [
            catalog_pb2.CatalogItem(
                item_id=BULK_IDS + start + i,
                title=f"bulk item {i}",
                category=category,
                brand="Bulk",
                price=float(i),
            )
            for i in range(n)
        ],
        st.integers(100, 1000),
        st.integers(0, 100),
        _valid_names(pool),
    )
    fields: Fields = {
        "items": (
            st.one_of(
                *[st.lists(valid, min_size=1, max_size=4, unique_by=lambda item: item.item_id)] * 4,
                bulk,
            ),
            st.one_of(st.lists(_catalog_items(pool), max_size=4), over_limit),
        )
    }
    return catalog_pb2.UpsertItemsRequest(**_draw(draw, fields))


@st.composite
def _delete_requests(draw: Draw, pool: Pool) -> catalog_pb2.DeleteItemsRequest:
    # Changeable ids, unknown ones, and (wild) non-positive ones, repeats and long runs.
    valid = st.one_of(
        st.sampled_from(pool.changeable),
        st.integers(BULK_IDS, BULK_IDS + 1100),
        st.integers(10**12, INT64_MAX),
    )
    wild = st.one_of(
        st.lists(st.one_of(valid, st.integers(INT64_MIN, 0)), max_size=12),
        st.lists(valid, max_size=6).map(lambda ids: ids + ids),
        st.builds(
            lambda n, start: list(range(start, start + n)),
            st.integers(1, 3000),
            st.sampled_from([-1500, 0, 10**12, BULK_IDS]),
        ),
    )
    fields: Fields = {"item_ids": (st.lists(valid, min_size=1, max_size=12), wild)}
    return catalog_pb2.DeleteItemsRequest(**_draw(draw, fields))


# --- what an accepted request must get --------------------------------------------------


def _finite(values: Any) -> bool:
    return bool(np.isfinite(np.asarray(list(values), np.float64)).all())


def _check_recommend(
    request: gateway_pb2.RecommendRequest, answer: gateway_pb2.RecommendResponse
) -> None:
    ids = [i.item_id for i in answer.items]
    assert len(ids) <= request.num_items and len(set(ids)) == len(ids)
    assert len(ids) == request.num_items or answer.exhausted  # fewer only when said so
    assert not set(ids) & set(request.exclude_item_ids)
    if not request.allow_seen_items:
        assert not set(ids) & set(request.recent_item_ids)
    assert _finite(i.score for i in answer.items)
    # Valid input and healthy stages: a degraded answer means a stage refused (or failed
    # on) the request the gateway built.
    assert not (answer.ranking_degraded or answer.tagging_degraded), answer


def _check_retrieve(
    request: retrieval_pb2.RetrieveRequest, answer: retrieval_pb2.RetrieveResponse
) -> None:
    ids = list(answer.item_ids)
    assert len(ids) <= (request.k or DEFAULT_K) and len(set(ids)) == len(ids)
    assert len(ids) == (request.k or DEFAULT_K) or answer.exhausted  # exact k, or said so
    assert len(answer.scores) == len(ids) == len(answer.two_tower_scores)
    assert min(ids, default=1) > 0
    assert not set(ids) & set(request.filter.exclude_item_ids)
    assert _finite(answer.scores) and _finite(answer.two_tower_scores)


def _check_rank(request: ranking_pb2.RankRequest, answer: ranking_pb2.RankResponse) -> None:
    ids, n = list(answer.item_ids), len(request.candidate_item_ids)
    assert len(ids) == min(request.num_items or n, n) and len(set(ids)) == len(ids)
    assert set(ids) <= set(request.candidate_item_ids)
    assert _finite(answer.scores)
    assert list(answer.scores) == sorted(answer.scores, reverse=True)


def _check_generate_tags(
    request: tagging_pb2.GenerateTagsRequest, answer: tagging_pb2.GenerateTagsResponse
) -> None:
    assert len(answer.results) == len(request.items)
    for result in answer.results:
        assert len(result.tags) <= (request.max_tags or DEFAULT_TAGS)
        assert all(0.0 <= t.confidence <= 1.0 for t in result.tags)


def _check_get_item_tags(
    request: tagging_pb2.GetItemTagsRequest, answer: tagging_pb2.GetItemTagsResponse
) -> None:
    returned = [i.item_id for i in answer.items] + list(answer.unknown_item_ids)
    assert sorted(returned) == sorted(request.item_ids)
    assert all(len(i.tags) <= (request.max_tags or DEFAULT_TAGS) for i in answer.items)


@dataclass(frozen=True)
class Rpc:
    server: str
    method: Callable[[grpc.Channel], Any]  # the stub's method on a channel to `server`
    requests: Callable[[Pool], st.SearchStrategy[Any]]
    check: Callable[[Any, Any], None]
    path: str  # for calls with raw bytes
    request: type[Message]
    response: type[Message]


PUBLIC = {
    "Recommend": Rpc(
        "gateway",
        lambda c: gateway_pb2_grpc.RecommendationServiceStub(c).Recommend,
        _recommend_requests,
        _check_recommend,
        "/recsys.v1.RecommendationService/Recommend",
        gateway_pb2.RecommendRequest,
        gateway_pb2.RecommendResponse,
    ),
    "Retrieve": Rpc(
        "retrieval",
        lambda c: retrieval_pb2_grpc.RetrievalServiceStub(c).Retrieve,
        _retrieve_requests,
        _check_retrieve,
        "/recsys.v1.RetrievalService/Retrieve",
        retrieval_pb2.RetrieveRequest,
        retrieval_pb2.RetrieveResponse,
    ),
    "Rank": Rpc(
        "ranking",
        lambda c: ranking_pb2_grpc.RankingServiceStub(c).Rank,
        _rank_requests,
        _check_rank,
        "/recsys.v1.RankingService/Rank",
        ranking_pb2.RankRequest,
        ranking_pb2.RankResponse,
    ),
    "GenerateTags": Rpc(
        "tagging",
        lambda c: tagging_pb2_grpc.TaggingServiceStub(c).GenerateTags,
        _generate_tags_requests,
        _check_generate_tags,
        "/recsys.v1.TaggingService/GenerateTags",
        tagging_pb2.GenerateTagsRequest,
        tagging_pb2.GenerateTagsResponse,
    ),
    "GetItemTags": Rpc(
        "tagging",
        lambda c: tagging_pb2_grpc.TaggingServiceStub(c).GetItemTags,
        _get_item_tags_requests,
        _check_get_item_tags,
        "/recsys.v1.TaggingService/GetItemTags",
        tagging_pb2.GetItemTagsRequest,
        tagging_pb2.GetItemTagsResponse,
    ),
}


def _describe(request: Message | bytes) -> str:
    if isinstance(request, bytes):
        return f"{len(request)} bytes {request[:600]!r}"
    text = text_format.MessageToString(request, as_one_line=True, as_utf8=True)
    return text if len(text) <= 1500 else text[:1500] + f" ... ({len(text)} characters)"


def _judge(
    request: Message | bytes, outcome: Callable[[], Any], name: str = ""
) -> tuple[grpc.StatusCode, Any]:
    """(status, answer or None) of a call; fails unless OK or a refusal the caller caused."""
    name = name or type(request).__name__
    try:
        answer = outcome()
    except grpc.RpcError as err:
        code, details = err.code(), err.details()  # type: ignore[attr-defined]
        field = details.split(":")[0].split("'")[0][:30]  # the field, or the message's start
        event(f"{name}: {code.name} {field}")
        assert code in CALLER_ERRORS, f"{code.name}: {details!r} for {_describe(request)}"
        return code, None
    event(f"{name}: OK")
    return grpc.StatusCode.OK, answer


def _call(method: Callable[..., Any], request: Message) -> Any | None:
    return _judge(request, lambda: method(request, timeout=TIMEOUT))[1]


# --- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(artifacts: Path) -> Pool:
    version = resolve(artifacts)
    items = ItemTable.load(version / "items")
    users = UserHistoryStore.load(version / "users")
    return Pool(
        item_ids=items.item_ids.tolist(),
        categories=list(items.category_names),
        users=[u for u in users.user_ids() if len(users.recent_items(u)) >= 3][:50],
    )


@pytest.fixture(scope="module")
def cluster(artifacts: Path) -> Iterator[Cluster]:
    # The artifact root, which ReloadModel resolves names against; operator RPCs on the
    # main ports, so CatalogService is fuzzed on every server.
    cluster = start_all(artifacts.parent, admin_port=0)
    yield cluster
    cluster.close()


def _known_good(pool: Pool) -> list[tuple[str, Message, Callable[[Any], bool]]]:
    """(RPC, valid request, what its full answer satisfies) for every server's RPCs."""
    recent = pool.item_ids[:5]
    product = tagging_pb2.ProductText(title="blue cotton shirt", description="soft")
    return [
        (
            "Recommend",
            gateway_pb2.RecommendRequest(user_id=pool.users[0], num_items=10),
            lambda a: len(a.items) == 10 and not (a.ranking_degraded or a.tagging_degraded),
        ),
        (
            "Retrieve",
            retrieval_pb2.RetrieveRequest(recent_item_ids=recent, k=20),
            lambda a: len(a.item_ids) == 20 and not a.cold_start,
        ),
        (
            "Rank",
            ranking_pb2.RankRequest(
                recent_item_ids=recent, candidate_item_ids=pool.item_ids[100:150], num_items=10
            ),
            lambda a: len(a.item_ids) == 10,
        ),
        (
            "GetItemTags",
            tagging_pb2.GetItemTagsRequest(item_ids=recent),
            lambda a: [i.item_id for i in a.items] == recent,
        ),
        (
            "GenerateTags",
            tagging_pb2.GenerateTagsRequest(items=[product]),
            lambda a: len(a.results) == 1,
        ),
    ]


def _assert_serving(
    channels: dict[str, grpc.Channel], pool: Pool, servers: tuple[str, ...] = SERVERS
) -> None:
    """Known-good requests to `servers` get full answers (an RpcError fails the test)."""
    for name, request, ok in _known_good(pool):
        rpc = PUBLIC[name]
        if rpc.server in servers:
            answer = rpc.method(channels[rpc.server])(request, timeout=TIMEOUT)
            assert ok(answer), f"known-good {name} answered {answer}"


def _feed(channels: dict[str, grpc.Channel], request: Message) -> None:
    """One change sent to every server in feed order, as a catalogue feed does: each judges
    it the same way (they share the input checks), and an accepted one is reported right."""
    upsert = isinstance(request, catalog_pb2.UpsertItemsRequest)
    codes = {}
    for server in FEED_ORDER:
        stub = catalog_pb2_grpc.CatalogServiceStub(channels[server])
        method = stub.UpsertItems if upsert else stub.DeleteItems
        codes[server], answer = _judge(request, lambda m=method: m(request, timeout=TIMEOUT))
        if answer is not None and upsert:
            assert answer.inserted + answer.updated == len(request.items) and answer.model_version
            event(f"UpsertItems accepted: {'bulk' if len(request.items) >= 100 else 'small'}")
        elif answer is not None:
            asked = set(request.item_ids)
            not_found = set(answer.not_found_item_ids)
            assert not_found <= asked and answer.deleted + len(not_found) == len(asked)
    assert len(set(codes.values())) == 1, f"{codes} for {_describe(request)}"


# Fixed examples in the suite, new ones with HYPOTHESIS_PROFILE=hunt (tests/conftest.py).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")), deadline=None)


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PUBLIC))
@FUZZ
@given(data=st.data())
def test_public_rpc(
    channels: dict[str, grpc.Channel], pool: Pool, name: str, data: st.DataObject
) -> None:
    rpc = PUBLIC[name]
    request = data.draw(rpc.requests(pool), label="request")
    answer = _call(rpc.method(channels[rpc.server]), request)
    if answer is not None:
        rpc.check(request, answer)
    _assert_serving(channels, pool, (rpc.server,))


def _mutated(body: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    """`body` with bytes replaced, inserted or cut (varints, lengths and tags broken)."""
    out = bytearray(body)
    for position, value, how in edits:
        at = position % (len(out) + 1)
        if how == "insert":
            out.insert(at, value)
        elif how == "cut":
            del out[at:]
        elif at < len(out):
            out[at] = value
    return bytes(out)


@FUZZ
@given(data=st.data())
def test_wire_bytes(channels: dict[str, grpc.Channel], pool: Pool, data: st.DataObject) -> None:
    """Mutated serialisations of fuzzed requests, or random bytes, sent as the body: what
    does not parse is INVALID_ARGUMENT, what does is judged like any request."""
    name = data.draw(st.sampled_from(sorted(PUBLIC)), label="rpc")
    rpc = PUBLIC[name]
    body = data.draw(
        st.one_of(
            st.tuples(
                rpc.requests(pool).map(lambda r: r.SerializeToString()),
                st.lists(
                    st.tuples(
                        st.integers(0, 2**16),
                        st.integers(0, 255),
                        st.sampled_from(["set", "insert", "cut"]),
                    ),
                    min_size=1,
                    max_size=4,
                ),
            ).map(lambda pair: _mutated(*pair)),
            st.binary(max_size=200),
        ),
        label="body",
    )
    call = channels[rpc.server].unary_unary(rpc.path)  # bytes in, bytes out
    code, answer = _judge(body, lambda: call(body, timeout=TIMEOUT), name)
    try:
        request = rpc.request.FromString(body)
    except DecodeError:  # the server's protobuf refuses it too
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name} for {_describe(body)}"
        _assert_serving(channels, pool, (rpc.server,))
        return
    if answer is not None:
        rpc.check(request, rpc.response.FromString(answer))
    _assert_serving(channels, pool, (rpc.server,))


@FUZZ
@given(data=st.data())
def test_concurrent_calls_are_judged_alone(
    channels: dict[str, grpc.Channel], pool: Pool, data: st.DataObject
) -> None:
    """A burst of fuzzed calls and known-good ones at once, now and then while a catalogue
    change goes through: the micro-batchers serve them together, and each gets its own
    answer (a bad request fails only itself)."""
    names = data.draw(st.lists(st.sampled_from(sorted(PUBLIC)), min_size=2, max_size=8))
    calls = [(PUBLIC[n], data.draw(PUBLIC[n].requests(pool), label=n)) for n in names]
    changes = st.one_of(_upsert_requests(pool), _delete_requests(pool))
    change = data.draw(st.one_of(st.none(), changes), label="change")
    good = [(PUBLIC[n], request, ok) for n, request, ok in _known_good(pool)]
    futures = [
        rpc.method(channels[rpc.server]).future(request, timeout=TIMEOUT)
        for rpc, request, *_ in calls + good
    ]
    if change is not None:  # in feed order, so no stage sees an item the next one lacks
        _feed(channels, change)
    for (rpc, request), future in zip(calls, futures, strict=False):
        answer = _judge(request, future.result)[1]
        if answer is not None:
            rpc.check(request, answer)
    for (_, request, ok), future in zip(good, futures[len(calls) :], strict=True):
        answer = future.result()
        assert ok(answer), f"known-good {_describe(request)} answered {answer}"


@pytest.mark.parametrize("operation", ["UpsertItems", "DeleteItems"])
@FUZZ
@given(data=st.data())
def test_catalog_feed(
    channels: dict[str, grpc.Channel], pool: Pool, operation: str, data: st.DataObject
) -> None:
    requests = _upsert_requests if operation == "UpsertItems" else _delete_requests
    _feed(channels, data.draw(requests(pool), label="request"))
    _assert_serving(channels, pool)


def _changed_items_view(channel: grpc.Channel, server: str, pool: Pool) -> list[Any]:
    """What `server` serves of the items catalogue changes may touch (pool.changeable; the
    bulk block is excluded to keep it small): tagging's tags, ranking's score (or refusal)
    of each, and the ids retrieval and the gateway return when every other item is
    excluded (at most k eligible: all of them, so no ranking boundary makes it flaky)."""
    recent = pool.item_ids[:5]
    changeable = set(pool.changeable)
    others = [i for i in pool.item_ids if i not in changeable]
    others += range(BULK_IDS, BULK_IDS + 1101)
    if server == "tagging":
        stub = tagging_pb2_grpc.TaggingServiceStub(channel)
        request = tagging_pb2.GetItemTagsRequest(item_ids=pool.changeable)
        answer = stub.GetItemTags(request, timeout=TIMEOUT)
        return [(i.item_id, sorted(t.name for t in i.tags)) for i in answer.items]
    if server == "ranking":
        rank = ranking_pb2_grpc.RankingServiceStub(channel).Rank
        view: list[Any] = []
        for item in pool.changeable:
            try:
                answer = rank(
                    ranking_pb2.RankRequest(recent_item_ids=recent, candidate_item_ids=[item]),
                    timeout=TIMEOUT,
                )
                view.append((item, round(answer.scores[0], 4)))
            except grpc.RpcError as err:
                view.append((item, err.code().name))  # type: ignore[attr-defined]
        return view
    if server == "retrieval":
        answer = retrieval_pb2_grpc.RetrievalServiceStub(channel).Retrieve(
            retrieval_pb2.RetrieveRequest(
                recent_item_ids=recent,
                k=1000,
                filter=common_pb2.ItemFilter(exclude_item_ids=others),
            ),
            timeout=TIMEOUT,
        )
        assert answer.exhausted
        return sorted(answer.item_ids)
    answer = gateway_pb2_grpc.RecommendationServiceStub(channel).Recommend(
        gateway_pb2.RecommendRequest(
            user_id=pool.users[0], num_items=len(changeable), exclude_item_ids=others
        ),
        timeout=TIMEOUT,
    )
    return sorted(i.item_id for i in answer.items)


@settings(FUZZ, max_examples=max(FUZZ.max_examples // 5, 10))  # a reload: ~0.1-0.3 s
@given(data=st.data())
def test_reload_reapplies_the_catalogue_changes(
    channels: dict[str, grpc.Channel], pool: Pool, data: st.DataObject
) -> None:
    """Changes, then a real reload (LATEST, or the loaded version by name) of one server:
    it succeeds — the changes made since start-up are re-applied to the version loaded —
    and that server answers for the changed items as it did before the reload."""
    changes = st.one_of(_upsert_requests(pool), _delete_requests(pool))
    for request in data.draw(st.lists(changes, max_size=3), label="changes"):
        _feed(channels, request)
    server = data.draw(st.sampled_from(SERVERS), label="server")
    admin = admin_pb2_grpc.ModelAdminServiceStub(channels[server])
    loaded = admin.GetModelStatus(admin_pb2.GetModelStatusRequest(), timeout=TIMEOUT).version
    before = _changed_items_view(channels[server], server, pool)

    request = admin_pb2.ReloadModelRequest(version=data.draw(st.sampled_from(["", loaded])))
    # Not _call: FAILED_PRECONDITION here (the re-applied changes broke the load) is a bug.
    reloaded = admin.ReloadModel(request, timeout=TIMEOUT)
    assert reloaded.version == reloaded.previous_version == loaded
    assert _changed_items_view(channels[server], server, pool) == before
    _assert_serving(channels, pool)


@FUZZ
@given(server=st.sampled_from(SERVERS), version=STRINGS.filter(bool))
def test_model_admin(
    channels: dict[str, grpc.Channel], pool: Pool, server: str, version: str
) -> None:
    """ReloadModel of versions that do not exist (never "", which reloads LATEST for real):
    refused, and the loaded version serves on."""
    stub = admin_pb2_grpc.ModelAdminServiceStub(channels[server])
    before = _call(stub.GetModelStatus, admin_pb2.GetModelStatusRequest())
    assert before is not None and before.version
    assert _call(stub.ReloadModel, admin_pb2.ReloadModelRequest(version=version)) is None
    after = _call(stub.GetModelStatus, admin_pb2.GetModelStatusRequest())
    assert after is not None and after.version == before.version
    _assert_serving(channels, pool, (server,))


def test_every_server_still_serving(channels: dict[str, grpc.Channel], pool: Pool) -> None:
    """After all the fuzzing above (this module's last test): health SERVING, answers right,
    ListTags too."""
    for name in SERVERS:
        health = health_pb2_grpc.HealthStub(channels[name])
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status
        assert status == health_pb2.HealthCheckResponse.SERVING, name
    _assert_serving(channels, pool)
    tagging = tagging_pb2_grpc.TaggingServiceStub(channels["tagging"])
    assert tagging.ListTags(tagging_pb2.ListTagsRequest(), timeout=TIMEOUT).tags

"""Distributed tracing through real servers: one Recommend is one trace across the four
services, continued from the caller's `traceparent`; degradation shows in the trace and in
the logs; spans reach a real OTLP/gRPC collector."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from recdata.items import ItemTable
from recsys.v1 import gateway_pb2, gateway_pb2_grpc, ranking_pb2, ranking_pb2_grpc
from services.gateway_service import GatewayApp, GatewayConfig
from services.logs import JsonFormatter
from services.ranking_service import RankingApp, RankingConfig
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.tracing import Tracing, tracing_to_otlp, tracing_with
from tests.integration.cluster import Cluster, start_all

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"


class Exporters:
    """One in-memory exporter per service (each service has its own tracer provider)."""

    def __init__(self) -> None:
        self.by_service: dict[str, InMemorySpanExporter] = {}
        self.exported = threading.Condition()

    def tracing(self, service: str) -> Tracing:
        exporter = self.by_service.setdefault(service, _Notifying(self.exported))
        return tracing_with(SimpleSpanProcessor(exporter), service)

    def wait_for(self, trace_id: int, spans: int) -> list[ReadableSpan]:
        """The trace once `spans` of its spans have ended. A call the server refused ends
        its span just after the status went out, so the client may be first."""
        with self.exported:
            assert self.exported.wait_for(lambda: len(self.trace(trace_id)) >= spans, 10)
        return self.trace(trace_id)

    def trace(self, trace_id: int) -> list[ReadableSpan]:
        return [
            span
            for exporter in self.by_service.values()
            for span in exporter.get_finished_spans()
            if span.context.trace_id == trace_id
        ]


class _Notifying(InMemorySpanExporter):
    def __init__(self, exported: threading.Condition) -> None:
        super().__init__()
        self._exported = exported

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        with self._exported:
            self._exported.notify_all()
        return result


def one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    matching = [s for s in spans if s.name == name and s.kind == kind]
    assert len(matching) == 1, [(s.name, s.kind) for s in spans]
    return matching[0]


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


@pytest.fixture(scope="module")
def traced(artifacts: Path) -> Iterator[tuple[Cluster, Exporters]]:
    exporters = Exporters()
    cluster = start_all(artifacts, tracing=exporters.tracing)
    yield cluster, exporters
    cluster.close()


def call_recommend(cluster: Cluster, **fields: object) -> gateway_pb2.RecommendResponse:
    metadata = fields.pop("metadata", None)
    with grpc.insecure_channel(cluster.address("gateway")) as channel:
        stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
        return stub.Recommend(gateway_pb2.RecommendRequest(**fields), timeout=10, metadata=metadata)


def test_one_recommend_is_one_trace_across_the_four_services(
    traced: tuple[Cluster, Exporters],
) -> None:
    cluster, exporters = traced
    response = call_recommend(
        cluster, user_id="u000003", num_items=5, metadata=[("traceparent", TRACEPARENT)]
    )
    assert not response.ranking_degraded and not response.tagging_degraded

    spans = exporters.trace(TRACE_ID)
    root = one(spans, "recsys.v1.RecommendationService/Recommend", SpanKind.SERVER)
    assert root.parent is not None and root.parent.span_id == CALLER_SPAN_ID
    assert service_of(root) == "recserve-gateway"
    stages = {
        "recsys.v1.RetrievalService/Retrieve": "recserve-retrieval",
        "recsys.v1.RankingService/Rank": "recserve-ranking",
        "recsys.v1.TaggingService/GetItemTags": "recserve-tagging",
    }
    for name, service in stages.items():
        outgoing = one(spans, name, SpanKind.CLIENT)
        served = one(spans, name, SpanKind.SERVER)
        assert service_of(outgoing) == "recserve-gateway"
        assert outgoing.parent is not None and outgoing.parent.span_id == root.context.span_id
        assert service_of(served) == service
        assert served.parent is not None and served.parent.span_id == outgoing.context.span_id
        assert served.attributes["rpc.grpc.status_code"] == 0
        assert (
            served.attributes["recserve.model_version"]
            == response.model_versions[service.removeprefix("recserve-")]
        )
        # The stage ran inside the gateway's call, and the server inside the client call.
        assert root.start_time <= outgoing.start_time <= served.start_time
        assert served.end_time <= outgoing.end_time <= root.end_time
    assert len(spans) == 7


def test_a_call_without_traceparent_starts_a_trace(traced: tuple[Cluster, Exporters]) -> None:
    cluster, exporters = traced
    before = {
        s.context.trace_id for e in exporters.by_service.values() for s in e.get_finished_spans()
    }
    call_recommend(cluster, user_id="u000004", num_items=3)
    gateway_spans = exporters.by_service["gateway"].get_finished_spans()
    new_roots = [
        s for s in gateway_spans if s.kind == SpanKind.SERVER and s.context.trace_id not in before
    ]
    assert len(new_roots) == 1 and new_roots[0].parent is None
    spans = exporters.trace(new_roots[0].context.trace_id)
    assert {service_of(s) for s in spans} == {
        "recserve-gateway",
        "recserve-retrieval",
        "recserve-ranking",
        "recserve-tagging",
    }


def test_a_callers_mistake_is_recorded_but_not_a_server_error(
    traced: tuple[Cluster, Exporters],
) -> None:
    cluster, exporters = traced
    trace_id = TRACE_ID + 1
    metadata = [("traceparent", f"00-{trace_id:032x}-{CALLER_SPAN_ID:016x}-01")]
    with pytest.raises(grpc.RpcError) as err:
        call_recommend(cluster, user_id="u000003", num_items=0, metadata=metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (span,) = exporters.wait_for(trace_id, 1)  # refused before any stage was called
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.status.status_code == StatusCode.UNSET


def test_degradation_shows_in_the_trace_and_in_the_logs(artifacts: Path) -> None:
    """Ranking and tagging unreachable: their client spans fail, Recommend succeeds, and
    the gateway's warnings carry the trace id."""
    exporters = Exporters()
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(JsonFormatter("gateway"))
    gateway_logger = logging.getLogger("services.gateway_service")
    gateway_logger.addHandler(handler)
    cluster = Cluster()
    try:
        cluster.start(
            "retrieval",
            RetrievalApp(RetrievalConfig(artifacts)),
            tracing=exporters.tracing("retrieval"),
        )
        unused = "127.0.0.1:1"
        gateway_tracing = exporters.tracing("gateway")
        cluster.start(
            "gateway",
            GatewayApp(
                GatewayConfig(artifacts, cluster.address("retrieval"), unused, unused),
                gateway_tracing,
            ),
            tracing=gateway_tracing,
        )
        response = call_recommend(
            cluster, user_id="u000003", num_items=5, metadata=[("traceparent", TRACEPARENT)]
        )
    finally:
        gateway_logger.removeHandler(handler)
        cluster.close()
    assert response.ranking_degraded and response.tagging_degraded
    spans = exporters.trace(TRACE_ID)
    root = one(spans, "recsys.v1.RecommendationService/Recommend", SpanKind.SERVER)
    assert root.status.status_code == StatusCode.UNSET  # served, degraded
    for name in ("recsys.v1.RankingService/Rank", "recsys.v1.TaggingService/GetItemTags"):
        failed = one(spans, name, SpanKind.CLIENT)
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    retrieve = one(spans, "recsys.v1.RetrievalService/Retrieve", SpanKind.CLIENT)
    assert retrieve.status.status_code == StatusCode.UNSET
    warnings = [json.loads(line) for line in log.getvalue().splitlines()]
    assert {w["msg"] for w in warnings} == {
        "ranking failed; serving retrieval order",
        "tagging failed; serving items without tags",
    }
    assert all(w["trace_id"] == f"{TRACE_ID:032x}" for w in warnings)
    assert {w["span_id"] for w in warnings} == {f"{root.context.span_id:016x}"}


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver: keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = threading.Event()

    def Export(self, request, context):
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_an_otlp_collector(artifacts: Path) -> None:
    ids = ItemTable.load(artifacts / "items").item_ids[:5].tolist()
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    cluster = Cluster()
    try:
        tracing = tracing_to_otlp(f"http://127.0.0.1:{port}", "ranking")
        cluster.start("ranking", RankingApp(RankingConfig(artifacts)), tracing=tracing)
        with grpc.insecure_channel(cluster.address("ranking")) as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            stub.Rank(
                ranking_pb2.RankRequest(
                    recent_item_ids=ids[:2], candidate_item_ids=ids[2:], num_items=2
                ),
                timeout=10,
                metadata=[("traceparent", TRACEPARENT)],
            )
        cluster.stop("ranking")  # the drain flushes the exporter's queue
        assert collector.received.wait(10)
    finally:
        cluster.close()
        receiver.stop(0)
    exported = [
        (resource_spans.resource, span)
        for request in collector.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    ((resource, span),) = exported
    assert span.name == "recsys.v1.RankingService/Rank"
    assert span.trace_id == TRACE_ID.to_bytes(16, "big")
    assert span.parent_span_id == CALLER_SPAN_ID.to_bytes(8, "big")
    service_names = [a.value.string_value for a in resource.attributes if a.key == "service.name"]
    assert service_names == ["recserve-ranking"]


def test_health_checks_are_not_traced(traced: tuple[Cluster, Exporters]) -> None:
    """Load balancers poll health: those calls would bury the traces that matter."""
    cluster, exporters = traced
    trace_id = TRACE_ID + 2
    with grpc.insecure_channel(cluster.address("gateway")) as channel:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""),
            timeout=10,
            metadata=[("traceparent", f"00-{trace_id:032x}-{CALLER_SPAN_ID:016x}-01")],
        )
    assert exporters.trace(trace_id) == []  # a span would have ended before the answer

"""Prometheus metrics for every server: requests, errors by status code, latency per method."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.logs import log_fields
from services.tracing import ServerSpan, Tracing

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "recserve_grpc_requests_total",
    "gRPC requests handled, by final status code",
    ["service", "method", "code"],
)
LATENCY = Histogram(
    "recserve_grpc_request_seconds",
    "gRPC request latency inside the server",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
IN_FLIGHT = Gauge("recserve_grpc_in_flight", "Requests being handled", ["service"])
STAGE_LATENCY = Histogram(
    "recserve_stage_seconds",
    "Time spent in one stage of a request (model forward, index search, downstream call)",
    ["service", "stage"],
    buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
)
DEGRADED = Counter(
    "recserve_degraded_responses_total",
    "Responses served without a stage (gateway)",
    ["service", "stage"],
)
BATCH_SIZE = Histogram(
    "recserve_batch_size",
    "Requests served by one micro-batch",
    ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INLINE_CALLS = Counter(
    "recserve_inline_calls_total",
    "Lone requests computed on the event-loop thread, skipping the executor (--inline-lone-calls)",
    ["service"],
)
MODEL_INFO = Gauge(
    "recserve_model_info", "Loaded model version (value is always 1)", ["service", "version"]
)

Behavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]


def start_metrics_http(port: int, host: str = "127.0.0.1") -> Any | None:
    """Serve /metrics on `port` (0 = any free port, negative = disabled); returns the HTTP
    server (its `server_address[1]` is the port), to stop with stop_metrics_http."""
    if port < 0:
        return None
    httpd, _thread = start_http_server(port, addr=host)
    return httpd


def stop_metrics_http(httpd: Any | None) -> None:
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()


class MalformedRequest:
    """What a request body that does not parse (corrupt wire format, bad UTF-8 in a string
    field) becomes, so that the call is answered INVALID_ARGUMENT instead of grpc's UNKNOWN."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError) as exc:  # the latter: pure-Python protobuf
            return MalformedRequest(str(exc))

    return parse


class MetricsInterceptor(aio.ServerInterceptor):
    """Counts and times every unary call (and traces it when `tracing` is on), answers a
    request that does not parse with INVALID_ARGUMENT, and turns unexpected exceptions into
    a clean INTERNAL.

    User mistakes never reach the INTERNAL path: handlers abort with INVALID_ARGUMENT etc.
    themselves.
    """

    def __init__(self, service: str, tracing: Tracing | None = None) -> None:
        self._service = service
        self._tracing = tracing
        # One instrumented handler per method, built on its first call: the per-call path
        # is then a dict lookup (handlers never change once the server started).
        self._instrumented: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        full_method = handler_call_details.method
        instrumented = self._instrumented.get(full_method)
        if instrumented is not None:
            return instrumented
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        open_span = self._tracing.server_spans(full_method) if self._tracing else None
        instrumented = grpc.unary_unary_rpc_method_handler(
            self._wrap(full_method.rsplit("/", 1)[-1], handler.unary_unary, open_span),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._instrumented[full_method] = instrumented
        return instrumented

    def _wrap(
        self,
        method: str,
        behavior: Behavior,
        open_span: Callable[[aio.ServicerContext], ServerSpan] | None,
    ) -> Behavior:
        service = self._service
        latency = LATENCY.labels(service, method)
        in_flight = IN_FLIGHT.labels(service)

        async def instrumented(request: Any, context: aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            response = error = None
            span = open_span(context) if open_span is not None else None
            in_flight.inc()
            try:
                if type(request) is MalformedRequest:
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    await context.abort(code, f"malformed {method} request: {request.reason}")
                response = await behavior(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except BaseException as exc:  # CancelledError included: the client went away
                if isinstance(exc, Exception):
                    code, error = grpc.StatusCode.INTERNAL, exc
                    logger.exception(
                        "unhandled error", extra=log_fields(method=method, error=repr(exc))
                    )
                    await context.abort(code, f"internal error in {method}; see server logs")
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                in_flight.dec()
                latency.observe(time.perf_counter() - start)
                REQUESTS.labels(service, method, _code_name(code)).inc()
                if span is not None:
                    span.finish(code, response, error)

        return instrumented


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)

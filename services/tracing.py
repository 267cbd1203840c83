"""Distributed tracing: OpenTelemetry spans, W3C trace context in gRPC metadata. Off by default.

On (`--otlp-endpoint`, or the standard OTEL_EXPORTER_OTLP_ENDPOINT), every server opens a
SERVER span per call that continues the caller's trace from its `traceparent` metadata, and
the gateway opens a CLIENT span per downstream call and passes the trace on, so one
Recommend is one trace across the four services. Spans are exported to an OTLP/gRPC
collector in batches from a background thread (never on the request path; a full queue
drops spans, it does not block calls). Sampling is the standard OTEL_TRACES_SAMPLER /
OTEL_TRACES_SAMPLER_ARG (default: follow the caller, sample every root); OTEL_SERVICE_NAME
overrides the service name "recserve-<service>". Off, no code here runs on a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_UNTRACED = ("/grpc.health.v1.Health/",)
# Server-side status codes that mark a span as failed (OpenTelemetry's RPC conventions): the
# others are the caller's mistake or choice, not the server's fault.
_SERVER_ERRORS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}


class Tracing:
    """One process's tracer. Not the global OpenTelemetry provider: tests run several
    services in one process, each with its own."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("recserve")

    def server_spans(self, full_method: str) -> Callable[[aio.ServicerContext], ServerSpan] | None:
        """What opens a call's SERVER span for `full_method` (the metrics interceptor calls
        it per call and finishes the span with the status it records); None for health
        checks, which load balancers poll and which would bury the traces."""
        if full_method.startswith(_UNTRACED):
            return None
        service, method = _split(full_method)
        name = f"{service}/{method}"
        attributes = _attributes(service, method)

        def open_span(context: aio.ServicerContext) -> ServerSpan:
            carrier = {key: value for key, value in (context.invocation_metadata() or ())}
            # The caller's trace, or a new root: never whatever context this task inherited.
            parent = _PROPAGATOR.extract(carrier)
            span = self.tracer.start_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
            return ServerSpan(span, otel_context.attach(trace.set_span_in_context(span, parent)))

        return open_span

    def client_interceptors(self) -> list[aio.ClientInterceptor]:
        """For the gateway's channels: a CLIENT span per call, the trace passed on."""
        return [_TracingClientInterceptor(self.tracer)]

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued and stop the exporter; bounded, so an unreachable collector
        cannot hold up a drain."""
        loop = asyncio.get_running_loop()
        flushed = loop.run_in_executor(None, self.provider.shutdown)
        # Past the bound, give up: the exporter thread is a daemon, it dies with the process.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(flushed), timeout_s)


def tracing_with(processor: SpanProcessor, service: str) -> Tracing:
    """Tracing whose finished spans go to `processor`; resource service.name
    "recserve-<service>" unless OTEL_SERVICE_NAME names it."""
    named = os.environ.get("OTEL_SERVICE_NAME")
    attributes = {} if named else {SERVICE_NAME: f"recserve-{service}"}
    # Sampler from OTEL_TRACES_SAMPLER (the SDK reads it when none is passed).
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return Tracing(provider)


def tracing_to_otlp(endpoint: str, service: str) -> Tracing:
    """Spans exported in batches to the OTLP/gRPC collector at `endpoint`
    (http://host:4317 plaintext, https://… TLS)."""
    # Imported here: the exporter pulls in its protobuf modules, which a server with tracing
    # off never needs.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return tracing_with(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)), service)


def _split(full_method: str | bytes) -> tuple[str, str]:
    """ "/recsys.v1.RankingService/Rank" → ("recsys.v1.RankingService", "Rank")."""
    if isinstance(full_method, bytes):
        full_method = full_method.decode()
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _attributes(service: str, method: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _end(span: Span, code: Any, errors: set[grpc.StatusCode] | None) -> None:
    """Record the call's gRPC status on `span` and end it; `errors`: the codes that mark it
    failed (None: every code but OK)."""
    if isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK and (errors is None or code in errors):
            span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


class ServerSpan:
    """A call's SERVER span, current (log lines carry its ids) until `finish`."""

    def __init__(self, span: Span, token: object) -> None:
        self._span = span
        self._token = token

    def finish(self, code: Any, response: Any = None, error: BaseException | None = None) -> None:
        """Record the call's status (and the serving model version, or the unexpected
        error) and end the span."""
        version = getattr(response, "model_version", "")
        if version:
            self._span.set_attribute("recserve.model_version", version)
        if error is not None:
            self._span.record_exception(error)
        otel_context.detach(self._token)
        _end(self._span, code, _SERVER_ERRORS)


class _TracingClientInterceptor(aio.UnaryUnaryClientInterceptor):
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[aio.UnaryUnaryCall]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> aio.UnaryUnaryCall:
        service, method = _split(client_call_details.method)
        span = self._tracer.start_span(
            f"{service}/{method}", kind=SpanKind.CLIENT, attributes=_attributes(service, method)
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        metadata = aio.Metadata(*(client_call_details.metadata or ()), *carrier.items())
        code: Any = grpc.StatusCode.UNKNOWN
        try:
            call = await continuation(client_call_details._replace(metadata=metadata), request)
            code = await call.code()  # waits for the call to finish; never raises its error
            return call
        except asyncio.CancelledError:  # the caller gave up (e.g. its own deadline)
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            _end(span, code, None)

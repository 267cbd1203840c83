"""Server reflection that ghz and grpcurl can use.

The stock Python servicer asks the descriptor pool for the file containing a symbol; with
protobuf's upb backend (protobuf >= 5, incl. 7) that lookup fails for *method* names such as
`recsys.v1.RecommendationService.Recommend`, which is exactly what ghz asks (ghz issue #419).
We resolve a method through its service. The same servicer is also exposed under the
`grpc.reflection.v1` name (wire-identical messages) for clients that try v1 first.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pool
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_reflection.v1alpha.reflection import SERVICE_NAME as V1ALPHA_NAME

V1_NAME = "grpc.reflection.v1.ServerReflection"


class MethodAwareReflectionServicer(ReflectionServicer):
    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if not response.HasField("error_response") or "." not in fully_qualified_name:
            return response
        service_name, method_name = fully_qualified_name.rsplit(".", 1)
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            return response
        if method_name not in service.methods_by_name:
            return response
        return super()._file_containing_symbol(request, service_name)


def enable_reflection(
    server: aio.Server,
    service_names: Iterable[str],
    pool: descriptor_pool.DescriptorPool | None = None,
) -> list[str]:
    """Register reflection (v1alpha and v1) and return every service name it advertises."""
    names = sorted({*service_names, V1ALPHA_NAME, V1_NAME})
    servicer = MethodAwareReflectionServicer(names, pool=pool)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (V1ALPHA_NAME, V1_NAME)
        ]
    )
    return names

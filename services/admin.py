"""ModelAdminService: hot reload and status, on its own port or the main one (or off)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from grpc import aio

from recdata.artifacts import ArtifactError, ArtifactNotFound, latest_version
from recsys.v1 import admin_pb2, admin_pb2_grpc
from services.errors import FailedPrecondition, InvalidArgument, NotFound, grpc_errors
from services.logs import log_fields

if TYPE_CHECKING:
    from services.runtime import ModelServer

logger = logging.getLogger(__name__)

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["ModelAdminService"].full_name
MAX_VERSION_NAME = 200  # version names are a timestamp and a hash, ~25 characters


class ModelAdmin(admin_pb2_grpc.ModelAdminServiceServicer):
    def __init__(self, server: ModelServer) -> None:
        self._server = server

    def register(self, grpc_server: aio.Server) -> None:
        admin_pb2_grpc.add_ModelAdminServiceServicer_to_server(self, grpc_server)

    @grpc_errors
    async def ReloadModel(
        self, request: admin_pb2.ReloadModelRequest, context: aio.ServicerContext
    ) -> admin_pb2.ReloadModelResponse:
        name = request.version
        if name and (
            "/" in name
            or name in {".", ".."}
            or len(name) > MAX_VERSION_NAME
            or not name.isprintable()
        ):
            raise InvalidArgument(
                "version",
                f"must be a version directory name (at most {MAX_VERSION_NAME} printable "
                "characters, no '/')",
            )
        try:
            version = name or latest_version(self._server.app.config.artifacts)
            previous, current, seconds = await self._server.reload(version)
        except ArtifactNotFound as exc:  # no such version
            raise NotFound(str(exc)) from exc
        except ArtifactError as exc:  # there, but incomplete or of another format
            raise FailedPrecondition(f"{exc}; the previous version is still serving") from exc
        except (FailedPrecondition, NotFound):
            raise
        except Exception as exc:  # corrupt files, incompatible schema …: the old one serves on
            logger.exception("reload failed", extra=log_fields(version=request.version))
            raise FailedPrecondition(
                f"version {request.version or 'LATEST'} failed to load ({exc}); "
                "the previous version is still serving"
            ) from exc
        return admin_pb2.ReloadModelResponse(
            version=current, previous_version=previous, load_seconds=seconds
        )

    async def GetModelStatus(
        self, request: admin_pb2.GetModelStatusRequest, context: aio.ServicerContext
    ) -> admin_pb2.ModelStatus:
        app = self._server.app
        return admin_pb2.ModelStatus(
            service=app.name,
            version=self._server.model_version or "",
            artifact_root=str(getattr(app.config, "artifacts", "")),
        )

"""Maps library and validation errors to gRPC status codes, in one place.

Handlers raise plain Python exceptions; `grpc_errors` turns a user's mistake into
INVALID_ARGUMENT / NOT_FOUND with a message naming the field, and a model that is not loaded
yet into UNAVAILABLE, so clients never see INTERNAL for something they can fix.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from services.batching import BatcherClosed, Overloaded

R = TypeVar("R")


class InvalidArgument(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class NotFound(LookupError):
    pass


class NotReady(RuntimeError):
    pass


class FailedPrecondition(RuntimeError):
    """The system is not in a state to do this (e.g. a version the server refuses)."""


class LimitReached(RuntimeError):
    """A configured capacity is used up (e.g. the live catalogue): RESOURCE_EXHAUSTED."""


Handler = Callable[[Any, Any, aio.ServicerContext], Awaitable[R]]


def grpc_errors(handler: Handler[R]) -> Handler[R]:
    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: aio.ServicerContext) -> R:
        try:
            return await handler(self, request, context)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except NotReady as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except FailedPrecondition as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except (Overloaded, LimitReached) as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BatcherClosed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        raise AssertionError("unreachable: abort raises")

    return wrapped

"""Request validation shared by the servicers; every error names the offending field."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.errors import InvalidArgument

MAX_USER_ID_LENGTH = 256
MAX_CATEGORY_LENGTH = 256


def count(value: int, field: str, default: int, maximum: int) -> int:
    """A requested size: 0 means `default`; negative or above `maximum` is an error."""
    if value < 0:
        raise InvalidArgument(field, f"must be >= 0 (0 means the default {default}), got {value}")
    if value == 0:
        return default
    if value > maximum:
        raise InvalidArgument(field, f"must be <= {maximum}, got {value}")
    return value


def positive_count(value: int, field: str, maximum: int) -> int:
    if value <= 0 or value > maximum:
        raise InvalidArgument(field, f"must be between 1 and {maximum}, got {value}")
    return value


def item_ids(values: Sequence[int], field: str, max_length: int) -> np.ndarray:
    """Item ids are positive int64; lists are bounded so one request cannot hog a server."""
    if len(values) > max_length:
        raise InvalidArgument(field, f"at most {max_length} ids, got {len(values)}")
    ids = np.fromiter(values, dtype=np.int64, count=len(values))
    if ids.size and ids.min() <= 0:
        bad = int(ids[ids <= 0][0])
        raise InvalidArgument(field, f"item ids must be positive, got {bad}")
    return ids


def has_duplicates(ids: np.ndarray) -> bool:
    """Whether any id occurs twice. Sort and compare neighbours: a tenth of np.unique's
    cost on a request's few hundred ids (it runs on the event loop for every call)."""
    ordered = np.sort(ids)
    return bool((ordered[1:] == ordered[:-1]).any())


def user_id(value: str, field: str = "user_id", required: bool = True) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, "must be non-empty")
        return value
    if len(value) > MAX_USER_ID_LENGTH:
        raise InvalidArgument(field, f"at most {MAX_USER_ID_LENGTH} characters")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def categories(
    values: Sequence[str], field: str, max_length: int = 100, what: str = "category"
) -> list[str]:
    """Names (categories, tags): at most `max_length` of them, each 1..256 characters."""
    if len(values) > max_length:
        raise InvalidArgument(field, f"at most {max_length} {what} names, got {len(values)}")
    for value in values:
        if not value or len(value) > MAX_CATEGORY_LENGTH:
            raise InvalidArgument(
                field, f"{what} names must be 1..{MAX_CATEGORY_LENGTH} characters"
            )
    return list(values)

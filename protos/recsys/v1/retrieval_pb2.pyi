from recsys.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveRequest(_message.Message):
    __slots__ = ("user_id", "recent_item_ids", "k", "filter")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    recent_item_ids: _containers.RepeatedScalarFieldContainer[int]
    k: int
    filter: _common_pb2.ItemFilter
    def __init__(self, user_id: _Optional[str] = ..., recent_item_ids: _Optional[_Iterable[int]] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_common_pb2.ItemFilter, _Mapping]] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("item_ids", "scores", "model_version", "cold_start", "unknown_recent_items", "exhausted", "two_tower_scores")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_RECENT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    TWO_TOWER_SCORES_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    cold_start: bool
    unknown_recent_items: int
    exhausted: bool
    two_tower_scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ..., cold_start: _Optional[bool] = ..., unknown_recent_items: _Optional[int] = ..., exhausted: _Optional[bool] = ..., two_tower_scores: _Optional[_Iterable[float]] = ...) -> None: ...

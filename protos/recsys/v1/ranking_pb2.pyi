from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RankRequest(_message.Message):
    __slots__ = ("user_id", "recent_item_ids", "candidate_item_ids", "candidate_scores", "num_items")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SCORES_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    recent_item_ids: _containers.RepeatedScalarFieldContainer[int]
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[int]
    candidate_scores: _containers.RepeatedScalarFieldContainer[float]
    num_items: int
    def __init__(self, user_id: _Optional[str] = ..., recent_item_ids: _Optional[_Iterable[int]] = ..., candidate_item_ids: _Optional[_Iterable[int]] = ..., candidate_scores: _Optional[_Iterable[float]] = ..., num_items: _Optional[int] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("item_ids", "scores", "model_version")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ...) -> None: ...

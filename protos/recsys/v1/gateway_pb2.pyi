from recsys.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "recent_item_ids", "num_items", "exclude_item_ids", "include_categories", "exclude_categories", "allow_seen_items")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SEEN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    recent_item_ids: _containers.RepeatedScalarFieldContainer[int]
    num_items: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[int]
    include_categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_categories: _containers.RepeatedScalarFieldContainer[str]
    allow_seen_items: bool
    def __init__(self, user_id: _Optional[str] = ..., recent_item_ids: _Optional[_Iterable[int]] = ..., num_items: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[int]] = ..., include_categories: _Optional[_Iterable[str]] = ..., exclude_categories: _Optional[_Iterable[str]] = ..., allow_seen_items: _Optional[bool] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "score", "title", "category", "tags", "external_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    score: float
    title: str
    category: str
    tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tag]
    external_id: str
    def __init__(self, item_id: _Optional[int] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[_common_pb2.Tag, _Mapping]]] = ..., external_id: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "milliseconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MILLISECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    milliseconds: float
    def __init__(self, stage: _Optional[str] = ..., milliseconds: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model_versions", "ranking_degraded", "tagging_degraded", "cold_start", "timings", "user_interest_tags", "exhausted")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RANKING_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    TAGGING_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    USER_INTEREST_TAGS_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    model_versions: _containers.ScalarMap[str, str]
    ranking_degraded: bool
    tagging_degraded: bool
    cold_start: bool
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    user_interest_tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tag]
    exhausted: bool
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., ranking_degraded: _Optional[bool] = ..., tagging_degraded: _Optional[bool] = ..., cold_start: _Optional[bool] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., user_interest_tags: _Optional[_Iterable[_Union[_common_pb2.Tag, _Mapping]]] = ..., exhausted: _Optional[bool] = ...) -> None: ...

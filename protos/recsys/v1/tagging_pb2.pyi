from recsys.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProductText(_message.Message):
    __slots__ = ("title", "description", "category")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    title: str
    description: str
    category: str
    def __init__(self, title: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class GenerateTagsRequest(_message.Message):
    __slots__ = ("items", "max_tags", "min_confidence")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_TAGS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ProductText]
    max_tags: int
    min_confidence: float
    def __init__(self, items: _Optional[_Iterable[_Union[ProductText, _Mapping]]] = ..., max_tags: _Optional[int] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class TagList(_message.Message):
    __slots__ = ("tags",)
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tag]
    def __init__(self, tags: _Optional[_Iterable[_Union[_common_pb2.Tag, _Mapping]]] = ...) -> None: ...

class GenerateTagsResponse(_message.Message):
    __slots__ = ("results", "model_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TagList]
    model_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[TagList, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetItemTagsRequest(_message.Message):
    __slots__ = ("item_ids", "max_tags")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TAGS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    max_tags: int
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., max_tags: _Optional[int] = ...) -> None: ...

class ItemTags(_message.Message):
    __slots__ = ("item_id", "tags")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tag]
    def __init__(self, item_id: _Optional[int] = ..., tags: _Optional[_Iterable[_Union[_common_pb2.Tag, _Mapping]]] = ...) -> None: ...

class GetItemTagsResponse(_message.Message):
    __slots__ = ("items", "unknown_item_ids", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ItemTags]
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[int]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[ItemTags, _Mapping]]] = ..., unknown_item_ids: _Optional[_Iterable[int]] = ..., model_version: _Optional[str] = ...) -> None: ...

class ListTagsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTagsResponse(_message.Message):
    __slots__ = ("tags", "model_version")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, tags: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

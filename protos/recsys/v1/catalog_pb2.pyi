from recsys.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogItem(_message.Message):
    __slots__ = ("item_id", "title", "description", "category", "brand", "price", "tags")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    title: str
    description: str
    category: str
    brand: str
    price: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_id: _Optional[int] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[str] = ..., brand: _Optional[str] = ..., price: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogItem, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("inserted", "updated", "live_items", "model_version", "tags")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    LIVE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    updated: int
    live_items: int
    model_version: str
    tags: _containers.RepeatedCompositeFieldContainer[ItemTagList]
    def __init__(self, inserted: _Optional[int] = ..., updated: _Optional[int] = ..., live_items: _Optional[int] = ..., model_version: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[ItemTagList, _Mapping]]] = ...) -> None: ...

class ItemTagList(_message.Message):
    __slots__ = ("item_id", "tags")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tag]
    def __init__(self, item_id: _Optional[int] = ..., tags: _Optional[_Iterable[_Union[_common_pb2.Tag, _Mapping]]] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted", "not_found_item_ids", "model_version")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    not_found_item_ids: _containers.RepeatedScalarFieldContainer[int]
    model_version: str
    def __init__(self, deleted: _Optional[int] = ..., not_found_item_ids: _Optional[_Iterable[int]] = ..., model_version: _Optional[str] = ...) -> None: ...

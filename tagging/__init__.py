"""Multi-label product tagger with two encoders behind one interface (`Tagger`):
"fast" (hashed n-grams -> EmbeddingBag -> MLP) and "minilm" (frozen all-MiniLM-L6-v2
sentence embeddings -> MLP head, `tagging.minilm`, imported only when used), per-tag
thresholds calibrated on validation data, and the live catalogue-tag cache."""

from tagging.calibration import Calibration, calibrate_thresholds
from tagging.catalog_tags import CatalogTags, LiveCatalogTags
from tagging.model import TagModel
from tagging.tagger import Tagger
from tagging.text import batch_features, hash_features, product_text
from tagging.train import TaggerTrainConfig, multilabel_prf, train_tagger
from tagging.vocabulary import TagVocabulary

__all__ = [
    "Calibration",
    "CatalogTags",
    "LiveCatalogTags",
    "TagModel",
    "TagVocabulary",
    "Tagger",
    "TaggerTrainConfig",
    "batch_features",
    "calibrate_thresholds",
    "hash_features",
    "multilabel_prf",
    "product_text",
    "train_tagger",
]

"""Fast multi-label product tagger: hashed n-grams -> EmbeddingBag -> MLP."""

from tagging.model import TagModel
from tagging.tagger import Tagger
from tagging.text import batch_features, hash_features, product_text
from tagging.train import TaggerTrainConfig, multilabel_prf, train_tagger
from tagging.vocabulary import TagVocabulary

__all__ = [
    "TagModel",
    "TagVocabulary",
    "Tagger",
    "TaggerTrainConfig",
    "batch_features",
    "hash_features",
    "multilabel_prf",
    "product_text",
    "train_tagger",
]

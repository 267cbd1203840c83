"""Several tag-generation requests served by one model call per tagger.

`tag_grouped` is the batch function the tagging service's micro-batcher runs: the texts of
every request for the same tagger go through one `predict_proba` (one MiniLM forward per
chunk of texts, or one EmbeddingBag pass), then each request gets its own cut-offs and
``max_tags``. Row i of a batched call equals row i of a single call up to float rounding
of the batched matrix multiply, so batching changes nothing a client can rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

from tagging.catalog_tags import TagPairs
from tagging.tagger import Tagger


@dataclass(frozen=True)
class TagQuery:
    """The arguments of one `Tagger.predict` call."""

    texts: list[str]
    max_tags: int = 5
    min_confidence: float | None = None


def tag_grouped(
    requests: list[tuple[Tagger, TagQuery]],
) -> list[list[TagPairs] | Exception]:
    """One result per request, in order; a failing tagger fails only its own requests.

    Requests carry their tagger because a hot reload may swap versions between two calls
    of one batch: each is answered by the version it started on."""
    results: list[list[TagPairs] | Exception | None] = [None] * len(requests)
    groups: dict[int, list[int]] = {}
    for slot, (tagger, _) in enumerate(requests):
        groups.setdefault(id(tagger), []).append(slot)
    for slots in groups.values():
        tagger = requests[slots[0]][0]
        texts = [t for s in slots for t in requests[s][1].texts]
        try:
            probs = tagger.predict_proba(texts)
        except Exception as exc:  # every request of this group sees why
            for s in slots:
                results[s] = exc
            continue
        start = 0
        for s in slots:
            query = requests[s][1]
            rows = probs[start : start + len(query.texts)]
            start += len(query.texts)
            results[s] = tagger.tags_from_proba(rows, query.max_tags, query.min_confidence)
    return [r if r is not None else RuntimeError("request not served") for r in results]

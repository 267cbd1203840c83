"""Synthetic e-commerce catalogue and interaction log with learnable structure.

The data exists so that retrieval, ranking and tagging models have something real to
learn: each signal below is planted deliberately and a model that picks it up beats the
popularity / most-frequent-tag baselines.

Catalogue (``CATEGORIES``)
    15 product categories of uneven size (``CategorySpec.share``). Each has a title
    noun, a model-code prefix, 5-10 made-up brands (syllable names, identical for every
    seed), a lognormal price range (shifted per brand: premium vs. value brands) and a
    pool of attribute tags. Tags within a pool are Zipf-distributed, so a
    most-frequent-tag baseline is meaningful but weak.

Items
    2-4 tags from the category pool, plus a colour tag (``COLOURS``) for a third of the
    items in colourable categories. Each tag word appears in the title with probability
    ``P_TAG_IN_TITLE``; otherwise the description usually paraphrases it with a synonym
    from ``TAG_PHRASES`` (and sometimes it is not mentioned at all). Descriptions carry
    filler sentences and, occasionally, a distractor naming a tag the item does NOT
    have, so text -> tags is learnable but not a string match.

Popularity
    Within a category item popularity is Zipf (rank^-``ZIPF_ALPHA``); category demand
    follows the uneven shares, so the interaction distribution is heavy-tailed.

Users and sequences
    Each user has 1-3 interest categories (weighted primary/secondary/tertiary) and 1-3
    preferred tag words drawn from those categories. Events are generated in time order;
    the next category is a complement of the previous item's category (``COMPLEMENTS``)
    with probability ``P_COMPLEMENT``, otherwise one of the current interests. For most
    users one interest drifts to a new category partway through the sequence. Within a
    category an item is drawn with probability proportional to

        popularity * exp(BETA_TAG * #preferred tags it has)
                   * (1 + BRAND_LOYALTY * min(#earlier buys of its brand, LOYALTY_CAP))
                   * (P_REPEAT if the user already has it else 1)

    (exact rejection sampling, vectorised across users, so generation is
    O(events * log items) rather than O(events * items)).

Timestamps
    Strictly increasing per user inside the year starting at ``EPOCH``: each user is
    active over a random sub-window, with bursts of short in-session gaps between longer
    pauses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recdata.errors import DataError
from recdata.schema import Dataset

EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
WINDOW_SECONDS = 365 * 24 * 3600
ITEM_ID_BASE = 100_000  # ids start well above any row index so the two are never confused

ZIPF_ALPHA = 1.0
BRAND_ZIPF_ALPHA = 0.8
TAG_ZIPF_ALPHA = 0.7
P_TAG_IN_TITLE = 0.7
P_COLOUR = 0.35
P_COMPLEMENT = 0.25
P_DRIFT = 0.75
P_REPEAT = 0.05
BETA_TAG = 1.0
BRAND_LOYALTY = 2.0
LOYALTY_CAP = 2
INTEREST_WEIGHTS = (0.6, 0.25, 0.15)  # primary, secondary, tertiary interest
MAX_INTERESTS = 3
MAX_PREFS = 3


@dataclass(frozen=True)
class CategorySpec:
    name: str
    noun: str  # title noun, e.g. "Rain Jacket"
    code: str  # model-code prefix, e.g. "RJ"
    tags: tuple[str, ...]  # attribute pool, most frequent first
    price_median: float
    price_sigma: float
    n_brands: int
    share: float  # relative catalogue size and demand
    colourable: bool = True


CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec(
        "smartphones", "Smartphone", "SP",
        ("5g", "dual-sim", "fast-charging", "long-battery", "pro-camera", "waterproof",
         "compact", "flagship", "budget"),
        420.0, 0.55, 8, 0.09,
    ),
    CategorySpec(
        "phone cases", "Phone Case", "PC",
        ("slim", "shockproof", "transparent", "rugged", "magnetic", "wallet", "leather",
         "waterproof", "eco-friendly"),
        22.0, 0.45, 10, 0.12,
    ),
    CategorySpec(
        "chargers", "Charger", "CH",
        ("fast-charging", "usb-c", "wireless", "compact", "multi-port", "magnetic", "travel",
         "braided"),
        28.0, 0.5, 7, 0.08,
    ),
    CategorySpec(
        "headphones", "Headphones", "HP",
        ("wireless", "noise-cancelling", "in-ear", "over-ear", "long-battery", "sport",
         "bass-boost", "waterproof", "foldable"),
        120.0, 0.7, 9, 0.09,
    ),
    CategorySpec(
        "running shoes", "Running Shoes", "RS",
        ("cushioned", "lightweight", "breathable", "trail", "racing", "waterproof",
         "reflective", "wide-fit"),
        110.0, 0.35, 8, 0.08,
    ),
    CategorySpec(
        "rain jackets", "Rain Jacket", "RJ",
        ("waterproof", "breathable", "lightweight", "hooded", "packable", "reflective",
         "insulated", "recycled"),
        140.0, 0.45, 7, 0.05,
    ),
    CategorySpec(
        "tents", "Tent", "TN",
        ("waterproof", "2-person", "lightweight", "freestanding", "quick-pitch", "4-person",
         "family", "4-season"),
        230.0, 0.6, 6, 0.03,
    ),
    CategorySpec(
        "backpacks", "Backpack", "BP",
        ("laptop", "waterproof", "travel", "hiking", "padded", "lightweight", "rolltop",
         "recycled"),
        75.0, 0.5, 8, 0.07,
    ),
    CategorySpec(
        "coffee makers", "Coffee Maker", "CM",
        ("drip", "espresso", "programmable", "compact", "stainless", "thermal", "grinder",
         "milk-frother"),
        95.0, 0.7, 6, 0.04,
    ),
    CategorySpec(
        "coffee beans", "Coffee Beans", "CB",
        ("whole-bean", "dark-roast", "organic", "fair-trade", "light-roast", "single-origin",
         "espresso", "decaf"),
        14.0, 0.35, 9, 0.07,
        colourable=False,
    ),
    CategorySpec(
        "yoga mats", "Yoga Mat", "YM",
        ("non-slip", "eco-friendly", "thick", "lightweight", "travel", "cushioned",
         "natural-rubber", "alignment"),
        35.0, 0.45, 6, 0.04,
    ),
    CategorySpec(
        "fiction books", "Novel", "FB",
        ("paperback", "bestseller", "thriller", "mystery", "romance", "fantasy", "sci-fi",
         "hardcover", "historical"),
        15.0, 0.35, 10, 0.13,
        colourable=False,
    ),
    CategorySpec(
        "e-readers", "E-Reader", "ER",
        ("e-ink", "backlit", "waterproof", "long-battery", "compact", "lightweight",
         "large-screen", "audiobook"),
        140.0, 0.35, 5, 0.02,
    ),
    CategorySpec(
        "water bottles", "Water Bottle", "WB",
        ("insulated", "stainless", "leak-proof", "bpa-free", "sport", "lightweight",
         "collapsible", "filter"),
        24.0, 0.4, 8, 0.05,
    ),
    CategorySpec(
        "smartwatches", "Smartwatch", "SW",
        ("heart-rate", "gps", "fitness", "waterproof", "sleep-tracking", "long-battery",
         "lte", "slim"),
        220.0, 0.5, 6, 0.04,
    ),
)  # fmt: skip

COLOURS: tuple[str, ...] = ("black", "white", "red", "blue", "green", "grey")

# Category -> categories a user plausibly buys next (accessories, consumables, gear).
COMPLEMENTS: dict[str, tuple[str, ...]] = {
    "smartphones": ("phone cases", "chargers", "headphones", "smartwatches"),
    "phone cases": ("chargers", "smartphones"),
    "chargers": ("phone cases", "headphones"),
    "headphones": ("chargers",),
    "running shoes": ("smartwatches", "water bottles", "rain jackets"),
    "rain jackets": ("backpacks", "tents"),
    "tents": ("backpacks", "water bottles"),
    "backpacks": ("water bottles", "rain jackets"),
    "coffee makers": ("coffee beans",),
    "coffee beans": ("coffee makers",),
    "yoga mats": ("water bottles", "smartwatches"),
    "fiction books": ("e-readers",),
    "e-readers": ("fiction books",),
    "water bottles": ("backpacks",),
    "smartwatches": ("chargers", "running shoes"),
}

# Paraphrases that never contain the tag word itself: when a tag is not in the title the
# description uses one of these, so a tagger must learn synonyms, not string matching.
TAG_PHRASES: dict[str, tuple[str, ...]] = {
    "5g": ("next-generation cellular speeds", "ultra-fast mobile data"),
    "dual-sim": ("two SIM slots", "room for a second phone number"),
    "fast-charging": ("rapid top-ups in minutes", "high-wattage power delivery"),
    "long-battery": ("a battery that lasts for days", "all-day endurance on one charge"),
    "pro-camera": ("a multi-lens camera system", "studio-grade photo capabilities"),
    "waterproof": ("sealed seams that keep water out", "a fully water-repellent build"),
    "compact": ("a pocketable footprint", "a small space-saving form"),
    "flagship": ("top-of-the-line components", "the most advanced hardware in the range"),
    "budget": ("an affordable price point", "great value for money"),
    "slim": ("an ultra-thin profile", "a barely-there feel"),
    "shockproof": ("air-cushioned corners that absorb drops", "impact-absorbing bumpers"),
    "transparent": ("a crystal-clear back", "a see-through design"),
    "rugged": ("a tough armoured shell", "heavy-duty construction"),
    "magnetic": ("snap-on magnet alignment", "built-in magnets"),
    "wallet": ("slots for cash and cards", "a built-in card holder"),
    "leather": ("genuine full-grain hide", "a soft hide finish"),
    "eco-friendly": ("plant-based materials", "a low-impact biodegradable build"),
    "usb-c": ("a reversible type-c port", "a modern type-c connector"),
    "wireless": ("a cable-free connection", "bluetooth pairing"),
    "multi-port": ("outlets to power many devices at once", "ports for up to four devices"),
    "travel": ("a go-anywhere design for trips", "a carry-on friendly size"),
    "braided": ("a woven nylon cable", "a tangle-resistant woven cord"),
    "noise-cancelling": ("active sound isolation", "technology that blocks background noise"),
    "in-ear": ("buds that sit snugly in the ear canal", "tiny buds with silicone tips"),
    "over-ear": ("plush cups that surround the ears", "full-size earcups"),
    "sport": ("a sweat-resistant build for workouts", "a secure fit for the gym"),
    "bass-boost": ("deep, punchy low end", "enhanced low frequencies"),
    "foldable": ("hinges that fold flat for storage", "a fold-away design"),
    "cushioned": ("plush shock-absorbing foam", "soft padding for comfort"),
    "lightweight": ("a feather-light build", "barely noticeable weight"),
    "breathable": ("airy mesh ventilation", "fabric that lets sweat escape"),
    "trail": ("grippy lugs for off-road terrain", "traction on rocky paths"),
    "racing": ("a carbon plate for race day", "a fast, competition-ready feel"),
    "reflective": ("high-visibility details for night runs", "light-catching accents"),
    "wide-fit": ("a roomy toe box", "extra room for broader feet"),
    "hooded": ("an adjustable storm hood", "a peaked hood"),
    "packable": ("stuffs into its own pocket", "packs down to fist size"),
    "insulated": ("a warm synthetic fill that traps heat", "double-wall vacuum construction"),
    "recycled": ("fabric made from reclaimed plastic bottles", "repurposed materials"),
    "2-person": ("room for two sleepers", "space for a pair of campers"),
    "freestanding": ("a self-supporting pole frame", "a frame that stands without stakes"),
    "quick-pitch": ("set-up in under two minutes", "an instant pop-up frame"),
    "4-person": ("space for four sleepers", "room for a small group"),
    "family": ("a spacious interior for the whole household", "room for kids and parents"),
    "4-season": ("strength to handle winter storms", "all-year weather protection"),
    "laptop": ("a padded sleeve for a notebook computer", "a dedicated computer compartment"),
    "hiking": ("a supportive harness for long mountain walks", "trekking-ready support"),
    "padded": ("foam-lined straps", "extra protective lining"),
    "rolltop": ("a roll-down closure", "a fold-over top opening"),
    "drip": ("classic paper-cone brewing", "pour-over style brewing"),
    "espresso": ("rich, intense shots", "concentrated crema-topped brews"),
    "programmable": ("a timer you can set the night before", "customisable brew schedules"),
    "stainless": ("brushed steel construction", "rust-proof steel"),
    "thermal": ("a vacuum carafe that keeps coffee hot", "a heat-retaining carafe"),
    "grinder": ("built-in burrs for fresh grounds", "an integrated bean mill"),
    "milk-frother": ("a steam wand for lattes", "creamy foamed milk"),
    "whole-bean": ("unground beans for fresh grinding", "beans you grind at home"),
    "dark-roast": ("a bold, smoky flavour", "a deep chocolatey profile"),
    "organic": ("beans grown without synthetic pesticides", "certified natural farming"),
    "fair-trade": ("ethical sourcing from farmer cooperatives", "fair prices paid to growers"),
    "light-roast": ("bright, fruity acidity", "delicate floral notes"),
    "single-origin": ("beans from one estate", "a traceable single-farm lot"),
    "decaf": ("caffeine-free enjoyment", "all the flavour without the buzz"),
    "non-slip": ("a grippy textured surface", "excellent traction in any pose"),
    "thick": ("extra-deep 6mm padding", "generous joint-friendly depth"),
    "natural-rubber": ("a tree-tapped latex base", "sustainably harvested rubber"),
    "alignment": ("printed guide lines for posture", "markings that position hands and feet"),
    "paperback": ("a soft-cover edition", "a flexible, light softcover"),
    "bestseller": ("a chart-topping favourite", "millions of copies sold"),
    "thriller": ("edge-of-your-seat suspense", "a pulse-pounding plot"),
    "mystery": ("a puzzling whodunit", "a detective story at its heart"),
    "romance": ("a heartwarming love story", "two people falling for each other"),
    "fantasy": ("dragons and magic", "an epic quest in an enchanted realm"),
    "sci-fi": ("a story set among the stars", "futuristic technology and space travel"),
    "hardcover": ("a sturdy hardback binding", "a collectible cloth-bound edition"),
    "historical": ("a story set in a bygone era", "richly researched period detail"),
    "e-ink": ("a paper-like electronic display", "glare-free electronic paper"),
    "backlit": ("a glowing front light for reading in the dark", "adjustable illumination"),
    "large-screen": ("a generous 8-inch display", "a roomy display for comics and PDFs"),
    "audiobook": ("narrated book playback", "listen-along audio support"),
    "leak-proof": ("a lid that never spills", "a tightly sealing cap"),
    "bpa-free": ("food-safe plastics free of bisphenol", "toxin-free materials"),
    "collapsible": ("a body that squashes flat when empty", "a silicone body that folds down"),
    "filter": ("built-in purification", "a carbon cartridge that cleans water"),
    "heart-rate": ("an optical pulse sensor", "continuous pulse monitoring"),
    "gps": ("satellite route tracking", "built-in location tracking"),
    "fitness": ("dozens of workout modes", "activity and step counting"),
    "sleep-tracking": ("overnight rest analysis", "insights into your nightly rest"),
    "lte": ("cellular connectivity without a phone", "a built-in mobile data connection"),
    "black": ("a jet finish", "a midnight colourway"),
    "white": ("a snow finish", "an ivory colourway"),
    "red": ("a crimson finish", "a scarlet colourway"),
    "blue": ("a navy finish", "a cobalt colourway"),
    "green": ("an olive finish", "a forest colourway"),
    "grey": ("a charcoal finish", "a slate colourway"),
}

# Title spellings where simple capitalisation reads wrong; lowercase still equals the tag.
_TAG_DISPLAY = {"5g": "5G", "usb-c": "USB-C", "bpa-free": "BPA-Free", "gps": "GPS", "lte": "LTE"}

_OPENERS = ("A", "This", "Our", "The new", "Meet the")
_FILLER = (
    "Ships in recyclable packaging.",
    "Backed by a two-year warranty.",
    "Free returns within 30 days.",
    "Designed and tested in Scandinavia.",
    "A customer favourite this season.",
    "Easy to clean and maintain.",
    "Limited stock available.",
    "Rated highly by reviewers.",
    "Makes a thoughtful gift.",
)
_SYLLABLES = (
    "nor", "vik", "al", "ta", "zen", "tro", "ka", "lum", "vex", "or", "sol", "mi",
    "ra", "qu", "el", "bri", "dan", "ter", "gro", "fi", "ax", "lo", "pen", "ix",
)  # fmt: skip
_BRAND_SEED = 20_240_101  # brand names are catalogue vocabulary: the same for every seed

TAG_VOCAB: tuple[str, ...] = tuple(TAG_PHRASES)  # every tag the generator can emit


def _brand_names(count: int) -> list[str]:
    """Unique pronounceable names from 2-3 syllables, fixed across seeds."""
    rng = np.random.default_rng(_BRAND_SEED)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        parts = rng.choice(len(_SYLLABLES), size=rng.integers(2, 4), replace=False)
        name = "".join(_SYLLABLES[p] for p in parts).capitalize()
        # A brand like "Alter" would smuggle the tag "lte" into every title it is in.
        clash = any(tag in name.lower() for tag in TAG_VOCAB)
        if name not in seen and len(name) >= 4 and not clash:
            seen.add(name)
            names.append(name)
    return names


def _display(tag: str) -> str:
    return _TAG_DISPLAY.get(tag) or "-".join(p.capitalize() for p in tag.split("-"))


def _zipf(n: int, alpha: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    return w / w.sum()


@dataclass
class _Catalogue:
    """Items in category-contiguous internal order, the layout the sampler needs."""

    category: np.ndarray  # (n,) category index
    brand: np.ndarray  # (n,) global brand index
    tag_lists: list[list[int]]  # per item, tag ids into TAG_VOCAB
    tag_matrix: np.ndarray  # (n, V + 1) bool; the last column is an always-False pad
    price: np.ndarray  # (n,)
    cum_pop: np.ndarray  # (n,) inclusive cumulative popularity
    seg_start: np.ndarray  # (C,) first item of each category
    seg_end: np.ndarray  # (C,) one past the last item
    brand_names: list[str]


def _category_sizes(rng: np.random.Generator, num_items: int) -> np.ndarray:
    shares = np.array([c.share for c in CATEGORIES])
    # One guaranteed item per category so every category and complement can be sampled.
    extra = rng.multinomial(num_items - len(CATEGORIES), shares / shares.sum())
    return extra + 1


def _sample_tags(rng: np.random.Generator, spec: CategorySpec, n: int) -> list[list[int]]:
    """2-4 distinct pool tags per item (Zipf over the pool) plus an optional colour."""
    pool = np.array([TAG_VOCAB.index(t) for t in spec.tags])
    counts = rng.choice([2, 3, 4], size=n, p=[0.45, 0.35, 0.2])
    # Gumbel top-k: weighted sampling without replacement for all items at once.
    keys = np.log(_zipf(len(pool), TAG_ZIPF_ALPHA)) + rng.gumbel(size=(n, len(pool)))
    ranked = pool[np.argsort(-keys, axis=1)]
    colour = rng.integers(len(COLOURS), size=n)
    has_colour = (rng.random(n) < P_COLOUR) & spec.colourable
    colour_ids = [TAG_VOCAB.index(c) for c in COLOURS]
    out: list[list[int]] = []
    for i in range(n):
        tags = ranked[i, : counts[i]].tolist()
        if has_colour[i]:
            tags.insert(0, colour_ids[colour[i]])
        out.append(tags)
    return out


def _build_catalogue(rng: np.random.Generator, num_items: int) -> _Catalogue:
    sizes = _category_sizes(rng, num_items)
    brand_offsets = np.concatenate([[0], np.cumsum([c.n_brands for c in CATEGORIES])])
    brand_names = _brand_names(int(brand_offsets[-1]))
    premium = rng.normal(0.0, 0.25, size=len(brand_names))  # value vs. premium brands
    categories, brands, prices, pops = [], [], [], []
    tag_lists: list[list[int]] = []
    for c, (spec, n) in enumerate(zip(CATEGORIES, sizes, strict=True)):
        local = rng.choice(spec.n_brands, size=n, p=_zipf(spec.n_brands, BRAND_ZIPF_ALPHA))
        brand = brand_offsets[c] + local
        raw = rng.lognormal(np.log(spec.price_median) + premium[brand], spec.price_sigma)
        categories.append(np.full(n, c))
        brands.append(brand)
        prices.append(np.maximum(np.round(raw), 1.0) - 0.01)  # "x.99" shop prices
        pops.append((rng.permutation(n) + 1.0) ** -ZIPF_ALPHA)
        tag_lists.extend(_sample_tags(rng, spec, int(n)))
    tag_matrix = np.zeros((num_items, len(TAG_VOCAB) + 1), dtype=bool)
    rows = np.repeat(np.arange(num_items), [len(t) for t in tag_lists])
    tag_matrix[rows, np.concatenate([np.array(t, dtype=np.int64) for t in tag_lists])] = True
    seg_end = np.cumsum(sizes)
    return _Catalogue(
        category=np.concatenate(categories),
        brand=np.concatenate(brands),
        tag_lists=tag_lists,
        tag_matrix=tag_matrix,
        price=np.concatenate(prices),
        cum_pop=np.cumsum(np.concatenate(pops)),
        seg_start=seg_end - sizes,
        seg_end=seg_end,
        brand_names=brand_names,
    )


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _render_item(
    spec: CategorySpec, brand: str, tags: list[int], code: int, r: np.ndarray
) -> tuple[str, str]:
    """Title and description for one item; ``r`` holds its pre-drawn uniforms."""
    title_words, phrases = [brand], []
    for j, tag_id in enumerate(tags):
        tag = TAG_VOCAB[tag_id]
        in_title = r[j] < P_TAG_IN_TITLE
        if in_title:
            title_words.append(_display(tag))
        # Paraphrase mostly when the title lacks the word; sometimes as reinforcement.
        if r[5 + j] < (0.25 if in_title else 0.85):
            options = TAG_PHRASES[tag]
            phrases.append(options[int(r[10 + j] * len(options))])
    title = " ".join([*title_words, spec.noun, f"{spec.code}-{code}"])
    noun = spec.noun.lower()
    opener = _OPENERS[int(r[15] * len(_OPENERS))]
    if phrases:
        text = f"{opener} {noun} from {brand} featuring {_join(phrases)}."
    else:
        text = f"{opener} {noun} from {brand} for everyday use."
    n_filler = 0 if r[16] < 0.3 else (1 if r[16] < 0.8 else 2)
    first = int(r[17] * len(_FILLER))
    for k in range(n_filler):
        text += " " + _FILLER[(first + 3 * k) % len(_FILLER)]
    if r[18] < 0.1:  # distractor: names a pool word this item does NOT have
        others = [t for t in spec.tags if TAG_VOCAB.index(t) not in tags]
        if others:
            text += f" Compare with our {others[int(r[19] * len(others))]} range."
    return title, text


def _items_frame(rng: np.random.Generator, cat: _Catalogue, row_of: np.ndarray) -> pd.DataFrame:
    n = len(cat.category)
    uniforms = rng.random((n, 20))
    codes = rng.integers(100, 1000, size=n)
    titles, descriptions = [], []
    for i in range(n):
        spec = CATEGORIES[cat.category[i]]
        title, text = _render_item(
            spec, cat.brand_names[cat.brand[i]], cat.tag_lists[i], int(codes[i]), uniforms[i]
        )
        titles.append(title)
        descriptions.append(text)
    frame = pd.DataFrame(
        {
            "item_id": (ITEM_ID_BASE + row_of).astype(np.int64),
            "title": titles,
            "description": descriptions,
            "category": [CATEGORIES[c].name for c in cat.category],
            "brand": [cat.brand_names[b] for b in cat.brand],
            "price": cat.price.astype(np.float64),
            "tags": [[TAG_VOCAB[t] for t in tags] for tags in cat.tag_lists],
        }
    )
    # Rows are shuffled (via row_of) so item ids carry no category information.
    return frame.sort_values("item_id", ignore_index=True)


@dataclass
class _Users:
    """Latent user state, in activity order (most events first) so the active users at
    step t are always a prefix and each step is a slice, not a mask."""

    n_events: np.ndarray  # (U,) descending
    interests: np.ndarray  # (U, MAX_INTERESTS) category ids, -1 padded
    drifted: np.ndarray  # (U, MAX_INTERESTS) interests after the drift step
    drift_step: np.ndarray  # (U,) step at which `drifted` takes over
    prefs: np.ndarray  # (U, MAX_PREFS) tag ids, -1 padded (hits the pad column)


def _event_counts(rng: np.random.Generator, num_users: int, mean: int) -> np.ndarray:
    sigma = 0.7
    raw = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=num_users)
    # The cap bounds the number of sequential steps the simulator must take.
    return np.clip(np.round(raw), 5, max(10 * mean, 5)).astype(np.int64)


def _top_k_categories(
    rng: np.random.Generator, n: int, k: int, banned: np.ndarray | None
) -> np.ndarray:
    """k distinct categories per row, drawn ∝ share, never one listed in ``banned``."""
    shares = np.array([c.share for c in CATEGORIES])
    keys = np.log(shares) + rng.gumbel(size=(n, len(CATEGORIES)))
    if banned is not None:
        for col in range(banned.shape[1]):
            ok = banned[:, col] >= 0
            keys[np.flatnonzero(ok), banned[ok, col]] = -np.inf
    return np.argsort(-keys, axis=1)[:, :k]


def _draw_users(rng: np.random.Generator, num_users: int, mean_events: int) -> _Users:
    n_events = np.sort(_event_counts(rng, num_users, mean_events))[::-1].copy()
    n_interests = rng.integers(1, MAX_INTERESTS + 1, size=num_users)
    interests = _top_k_categories(rng, num_users, MAX_INTERESTS, None)
    interests[np.arange(MAX_INTERESTS)[None, :] >= n_interests[:, None]] = -1
    # Drift: one existing interest slot is replaced by a category the user did not have.
    fresh = _top_k_categories(rng, num_users, 1, interests)[:, 0]
    slot = (rng.random(num_users) * n_interests).astype(np.int64)
    drifted = interests.copy()
    drifted[np.arange(num_users), slot] = fresh
    start = (n_events * rng.uniform(0.3, 0.7, size=num_users)).astype(np.int64)
    drift_step = np.where(rng.random(num_users) < P_DRIFT, start, n_events)
    return _Users(n_events, interests, drifted, drift_step, _draw_prefs(rng, interests))


def _draw_prefs(rng: np.random.Generator, interests: np.ndarray) -> np.ndarray:
    """Preferred tags come from the user's own interest pools (plus colours), so they
    actually change which items the user picks."""
    u = len(interests)
    pools = [[TAG_VOCAB.index(t) for t in c.tags] for c in CATEGORIES]
    width = max(len(p) for p in pools)
    pool_table = np.array([p + [p[0]] * (width - len(p)) for p in pools])
    pool_len = np.array([len(p) for p in pools])
    n_interests = (interests >= 0).sum(axis=1)
    prefs = np.full((u, MAX_PREFS), -1, dtype=np.int64)
    colour_ids = np.array([TAG_VOCAB.index(c) for c in COLOURS])
    for j in range(MAX_PREFS):
        src = interests[np.arange(u), (rng.random(u) * n_interests).astype(np.int64)]
        pick = pool_table[src, (rng.random(u) * pool_len[src]).astype(np.int64)]
        colour = colour_ids[rng.integers(len(COLOURS), size=u)]
        prefs[:, j] = np.where(rng.random(u) < 0.15, colour, pick)
    n_prefs = rng.integers(1, MAX_PREFS + 1, size=u)
    prefs[np.arange(MAX_PREFS)[None, :] >= n_prefs[:, None]] = -1
    # A repeated draw must not count twice towards the match bonus.
    prefs[:, 1][prefs[:, 1] == prefs[:, 0]] = -1
    dup2 = (prefs[:, 2] == prefs[:, 0]) | (prefs[:, 2] == prefs[:, 1])
    prefs[:, 2][dup2] = -1
    return prefs


@dataclass
class _SimState:
    brand_count: np.ndarray  # (U, B) purchases per brand
    cat_count: np.ndarray  # (U, C) purchases per category
    prev_cat: np.ndarray  # (U,) category of the previous event, -1 before the first
    seen: np.ndarray  # sorted user * n_items + item codes already consumed


def _complement_table() -> tuple[np.ndarray, np.ndarray]:
    index = {c.name: i for i, c in enumerate(CATEGORIES)}
    width = max(len(v) for v in COMPLEMENTS.values())
    table = np.full((len(CATEGORIES), width), -1, dtype=np.int64)
    for name, comps in COMPLEMENTS.items():
        table[index[name], : len(comps)] = [index[c] for c in comps]
    return table, (table >= 0).sum(axis=1)


_COMPLEMENT_TABLE = _complement_table()  # (C, max complements) padded -1, and counts


def _choose_categories(
    rng: np.random.Generator, users: _Users, state: _SimState, t: int, k: int
) -> np.ndarray:
    current = np.where((t >= users.drift_step[:k])[:, None], users.drifted[:k], users.interests[:k])
    weights = np.where(current >= 0, np.array(INTEREST_WEIGHTS), 0.0)
    cum = np.cumsum(weights, axis=1)
    u = rng.random(k) * cum[:, -1]
    slot = np.minimum((cum <= u[:, None]).sum(axis=1), MAX_INTERESTS - 1)
    chosen = current[np.arange(k), slot]
    table, n_comp = _COMPLEMENT_TABLE
    prev = state.prev_cat[:k]
    safe_prev = np.maximum(prev, 0)
    pick = (rng.random(k) * np.maximum(n_comp[safe_prev], 1)).astype(np.int64)
    use_comp = (prev >= 0) & (rng.random(k) < P_COMPLEMENT) & (n_comp[safe_prev] > 0)
    return np.where(use_comp, table[safe_prev, pick], chosen)


def _in_sorted(sorted_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    if sorted_codes.size == 0:
        return np.zeros(codes.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_codes, codes), sorted_codes.size - 1)
    return sorted_codes[pos] == codes


def _acceptance(
    cat: _Catalogue,
    cat_pool: np.ndarray,
    prefs: np.ndarray,
    state: _SimState,
    users: np.ndarray,
    cats: np.ndarray,
    props: np.ndarray,
) -> np.ndarray:
    """target(item) / (proposal(item) * bound) for proposals drawn ∝ popularity.

    The bound uses the user's best achievable tag match and loyalty within the category,
    so acceptance is exactly proportional to the non-popularity factors."""
    n_items = len(cat.category)
    up = prefs[users]
    matches = sum(cat.tag_matrix[props, up[:, j : j + 1]].astype(np.int64) for j in range(3))
    best = cat_pool[cats[:, None], up].sum(axis=1)
    bought = np.minimum(state.brand_count[users[:, None], cat.brand[props]], LOYALTY_CAP)
    bound = 1.0 + BRAND_LOYALTY * np.minimum(state.cat_count[users, cats], LOYALTY_CAP)
    acc = np.exp(BETA_TAG * (matches - best[:, None])) * (1.0 + BRAND_LOYALTY * bought)
    acc /= bound[:, None]
    repeat = _in_sorted(state.seen, users[:, None] * n_items + props)
    return np.where(repeat, acc * P_REPEAT, acc)


def _sample_items(
    rng: np.random.Generator,
    cat: _Catalogue,
    cat_pool: np.ndarray,
    prefs: np.ndarray,
    state: _SimState,
    cats: np.ndarray,
    batch: int = 16,
    max_rounds: int = 8,
) -> np.ndarray:
    """Vectorised rejection sampling: every pending user draws `batch` popularity-
    proportional proposals per round and keeps the first accepted one."""
    k = len(cats)
    result = np.full(k, -1, dtype=np.int64)
    pending = np.arange(k)
    lo_cum = np.concatenate([[0.0], cat.cum_pop])[cat.seg_start]
    hi_cum = cat.cum_pop[cat.seg_end - 1]
    for round_ in range(max_rounds):
        c = cats[pending]
        u = lo_cum[c, None] + rng.random((len(pending), batch)) * (hi_cum - lo_cum)[c, None]
        props = np.searchsorted(cat.cum_pop, u, side="right")
        props = np.clip(props, cat.seg_start[c, None], cat.seg_end[c, None] - 1)
        acc = _acceptance(cat, cat_pool, prefs, state, pending, c, props)
        hit = rng.random(acc.shape) < acc
        found = hit.any(axis=1)
        first = hit.argmax(axis=1)
        rows = np.arange(len(pending))
        result[pending[found]] = props[rows[found], first[found]]
        if round_ == max_rounds - 1:
            # Rare (user exhausted a tiny category): settle for the most-wanted proposal.
            best = acc.argmax(axis=1)
            result[pending[~found]] = props[rows[~found], best[~found]]
        pending = pending[~found]
        if pending.size == 0:
            break
    return result


def _category_pools() -> np.ndarray:
    """(C, V + 1) bool: which tags items of each category can carry."""
    pools = np.zeros((len(CATEGORIES), len(TAG_VOCAB) + 1), dtype=bool)
    colour_ids = [TAG_VOCAB.index(c) for c in COLOURS]
    for c, spec in enumerate(CATEGORIES):
        pools[c, [TAG_VOCAB.index(t) for t in spec.tags]] = True
        pools[c, colour_ids] = spec.colourable
    return pools


def _simulate(
    rng: np.random.Generator, cat: _Catalogue, users: _Users
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (user position, step, internal item) for every event."""
    n_users, n_items = len(users.n_events), len(cat.category)
    state = _SimState(
        brand_count=np.zeros((n_users, len(cat.brand_names)), dtype=np.int16),
        cat_count=np.zeros((n_users, len(CATEGORIES)), dtype=np.int16),
        prev_cat=np.full(n_users, -1, dtype=np.int64),
        seen=np.empty(0, dtype=np.int64),
    )
    cat_pool = _category_pools()
    # Active users per step: n_events is descending, so a count is enough.
    active = np.searchsorted(-users.n_events, -np.arange(users.n_events[0]), side="left")
    out_user, out_step, out_item = [], [], []
    for t in range(int(users.n_events[0])):
        k = int(active[t])
        pos = np.arange(k)
        cats = _choose_categories(rng, users, state, t, k)
        items = _sample_items(rng, cat, cat_pool, users.prefs, state, cats)
        state.brand_count[pos, cat.brand[items]] += 1
        state.cat_count[pos, cats] += 1
        state.prev_cat[:k] = cats
        codes = pos * n_items + items  # already sorted: one event per user per step
        state.seen = np.insert(state.seen, np.searchsorted(state.seen, codes), codes)
        out_user.append(pos)
        out_step.append(np.full(k, t))
        out_item.append(items)
    return np.concatenate(out_user), np.concatenate(out_step), np.concatenate(out_item)


def _timestamps(rng: np.random.Generator, user: np.ndarray, n_users: int) -> np.ndarray:
    """Strictly increasing unix seconds per user; `user` must be grouped and in order."""
    n = len(user)
    first = np.r_[True, user[1:] != user[:-1]]
    starts = np.flatnonzero(first)
    session = rng.random(n) < 0.55  # short in-session gap vs. a pause of days/weeks
    short = np.where(session, rng.exponential(900.0, size=n), 0.0) + 30.0
    long = np.where(session, 0.0, rng.exponential(1.0, size=n))
    short[first], long[first] = 0.0, 0.0

    def group_cumsum(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(x)
        return c - np.repeat(c[starts] - x[starts], np.diff(np.r_[starts, n]))

    cum_short, cum_long = group_cumsum(short), group_cumsum(long)
    counts = np.diff(np.r_[starts, n])
    last = starts + counts - 1
    begin = rng.uniform(0.0, 0.6, size=n_users) * WINDOW_SECONDS
    span = rng.uniform(0.15, 0.98, size=n_users) * (WINDOW_SECONDS - begin)
    uid = user[starts]
    # Pauses are stretched to fill the user's active span left after in-session time.
    room = np.maximum(span[uid] - cum_short[last], 0.0)
    scale = room / np.maximum(cum_long[last], 1e-9)
    seconds = np.repeat(begin[uid], counts) + cum_short + cum_long * np.repeat(scale, counts)
    return EPOCH + np.floor(seconds).astype(np.int64)


def generate(
    num_items: int = 5000, num_users: int = 2000, mean_events_per_user: int = 30, seed: int = 0
) -> Dataset:
    """Build a synthetic dataset; identical output for identical arguments."""
    if num_items < len(CATEGORIES):
        raise DataError(f"num_items must be at least {len(CATEGORIES)} (one per category)")
    if num_users < 1 or mean_events_per_user < 1:
        raise DataError("num_users and mean_events_per_user must be positive")
    if seed < 0:
        raise DataError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng(seed)
    cat = _build_catalogue(rng, num_items)
    row_of = rng.permutation(num_items)  # internal item -> public row / id offset
    items = _items_frame(rng, cat, row_of)
    users = _draw_users(rng, num_users, mean_events_per_user)
    pos, step, item = _simulate(rng, cat, users)
    # Positions are activity-ranked; a random relabel keeps ids unrelated to activity.
    user_index = rng.permutation(num_users)[pos]
    order = np.lexsort((step, user_index))
    user_index, item = user_index[order], item[order]
    width = max(6, len(str(num_users - 1)))
    names = np.array([f"u{i:0{width}d}" for i in range(num_users)], dtype=object)
    interactions = pd.DataFrame(
        {
            "user_id": names[user_index],
            "item_id": (ITEM_ID_BASE + row_of[item]).astype(np.int64),
            "timestamp": _timestamps(rng, user_index, num_users),
        }
    )
    interactions["user_id"] = interactions["user_id"].astype(str)
    return Dataset(name=f"synthetic-s{seed}", items=items, interactions=interactions)

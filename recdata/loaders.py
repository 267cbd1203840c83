"""Loaders that turn real data sets, and a documented generic format, into a ``Dataset``.

Every loader returns ``(Dataset, LoadReport)``. Bad rows never crash a load and are never
silently fixed: each dropped row is counted under exactly one reason (the first that applies,
in the order the loader checks them), and every value that had to be filled in is counted
as a note. The exact rules per data set are in ``docs/data.md``.

Files are read where they are: nothing here copies or caches data.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from recdata.errors import DataError
from recdata.schema import Dataset

UNKNOWN = "unknown"
MOVIELENS_NO_GENRE = "(no genres listed)"
MOVIELENS_MIN_TAG_MOVIES = 2  # a free-text user tag must occur on this many distinct movies
RETAIL_FILE = "online_retail_sample40k.csv"
RETAIL_TAG_MIN_SUPPORT = 20  # a description word must occur in this many SKU titles
FASHION_LABELS = (
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "usage",
)

_EPOCH = pd.Timestamp(0, tz="UTC")
_SECOND = pd.Timedelta(1, "s")
_INT64_SAFE = 2.0**62  # unix seconds beyond this are garbage, not dates
_POSITIVE_INT = r"[1-9][0-9]{0,17}"  # canonical positive integer that fits int64
_NUMBER = r"[+-]?[0-9]+(?:\.[0-9]*)?"


# --------------------------------------------------------------------------- report


@dataclass
class LoadReport:
    """What a loader read, kept and dropped, by reason.

    ``rows_*``/``dropped`` count interaction rows, ``items_*``/``items_dropped`` catalogue
    rows; for each table ``read == kept + sum(dropped)``. ``notes`` counts rows that were
    kept with a value filled in or truncated, and auxiliary rows that were ignored.
    """

    dataset: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    items_read: int = 0
    items_kept: int = 0
    items_dropped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """A headline plus one readable line per reason."""
        lines = [
            f"{self.dataset}: interactions {self.rows_read:,} read, {self.rows_kept:,} kept; "
            f"items {self.items_read:,} read, {self.items_kept:,} kept"
        ]
        for title, counts in (
            ("dropped interaction rows", self.dropped),
            ("dropped item rows", self.items_dropped),
            ("note", self.notes),
        ):
            lines += [f"  {title}, {reason}: {n:,}" for reason, n in sorted(counts.items())]
        return "\n".join(lines)


def _add(counts: dict[str, int], reason: str, n: int) -> None:
    if n:
        counts[reason] = counts.get(reason, 0) + int(n)


def _drop(frame: pd.DataFrame, bad: pd.Series, reason: str, counts: dict[str, int]) -> pd.DataFrame:
    """Remove rows flagged ``bad`` and count them under ``reason``."""
    bad = bad.fillna(True).astype(bool)
    _add(counts, reason, int(bad.sum()))
    return frame.loc[~bad]


# --------------------------------------------------------------------------- reading


def _read_csv(path: Path, notes: dict[str, int]) -> tuple[pd.DataFrame, int]:
    """Read a CSV with every column as raw text; returns the frame and the malformed lines.

    pyarrow is used directly, not through pandas, so that ids stay text on every pandas
    version ("007" and "12345.0" survive as written) and lines with too many *or* too few
    fields reach the skip handler (pandas' C engine pads short lines silently). Only empty
    fields are missing: "NA" is a legitimate title or tag. Files that are not UTF-8 are
    retried as Latin-1 (the original UCI Online Retail export is).
    """
    try:
        return _read_csv_as(path, "utf-8")
    except (UnicodeDecodeError, pa.ArrowInvalid) as err:
        if not isinstance(err, UnicodeDecodeError) and "UTF8" not in str(err):
            raise
    _add(notes, "decoded_as_latin1", 1)
    return _read_csv_as(path, "latin-1")


def _read_csv_as(path: Path, encoding: str) -> tuple[pd.DataFrame, int]:
    with path.open(encoding="utf-8-sig" if encoding == "utf-8" else encoding, newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise DataError(f"{path} is empty: expected a header line")
    bad_lines = 0

    def skip(_row: object) -> str:
        nonlocal bad_lines
        bad_lines += 1
        return "skip"

    table = pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(encoding=encoding),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            null_values=[""],
            strings_can_be_null=True,
        ),
    )
    return table.to_pandas(), bad_lines


def _read_table(path: Path, notes: dict[str, int]) -> tuple[pd.DataFrame, int]:
    if path.suffix == ".parquet":
        return pd.read_parquet(path), 0
    return _read_csv(path, notes)


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} is missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )


def _require_files(dataset: str, folder: Path, names: Iterable[str], hint: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{dataset}: {', '.join(missing)} not found in {folder} ({hint})")


def _single_file(dataset: str, path: Path, name: str, hint: str) -> Path:
    """Accept the data file itself or a folder holding it."""
    if path.is_file():
        return path
    if path.is_dir():
        if (path / name).is_file():
            return path / name
        raise FileNotFoundError(f"{dataset}: {name} not found in {path} ({hint})")
    raise FileNotFoundError(f"{dataset}: {path} does not exist ({hint})")


# --------------------------------------------------------------------------- value cleaning


def _text(values: pd.Series) -> pd.Series:
    """Strings stripped of surrounding whitespace; empty or missing -> NA."""
    out = values.astype("str").str.strip()
    return out.where(out != "")


def _id_text(values: pd.Series) -> pd.Series:
    """Ids as text, whichever way they were stored: 12, 12.0 (a float column) -> "12"."""
    if pd.api.types.is_float_dtype(values.dtype):
        # A missing value turns an int column into float; NaN must not block the cast.
        whole = values.isna() | (values == np.floor(values))
        if whole.all():
            values = values.astype("Int64")
    elif values.dtype == object:
        values = values.map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
    return _text(values)


def _strip_float_suffix(ids: pd.Series) -> pd.Series:
    """Turn "12345.0" into "12345": ids exported via a float column are still integers."""
    return ids.str.replace(r"^([0-9]+)\.0+$", r"\1", regex=True)


def _unix_seconds(values: pd.Series, notes: dict[str, int]) -> pd.Series:
    """Unix seconds (float, NaN where unparseable) from numbers, digit strings or ISO-8601.

    All-digit strings are unix seconds; anything else is parsed as ISO-8601, naive times as
    UTC. Sub-second parts are floored and counted, because the contract is whole seconds.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        seconds, fraction = _from_datetimes(stamps)
    elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        seconds = values.astype("float64")
        fraction = seconds != np.floor(seconds)
    else:
        text = _text(values)
        numeric = text.str.fullmatch(_NUMBER).fillna(False).astype(bool)
        seconds = pd.to_numeric(text.where(numeric), errors="coerce").astype("float64")
        fraction = seconds != np.floor(seconds)
        if (~numeric).any():
            stamps = pd.to_datetime(
                text.where(~numeric), format="ISO8601", utc=True, errors="coerce"
            )
            iso_seconds, iso_fraction = _from_datetimes(stamps)
            seconds = seconds.where(numeric, iso_seconds)
            fraction = fraction.where(numeric, iso_fraction)
    seconds = seconds.where(np.isfinite(seconds) & (seconds.abs() < _INT64_SAFE))
    _add(notes, "timestamp_fraction_floored", int((fraction.fillna(False) & seconds.notna()).sum()))
    return np.floor(seconds)


def _from_datetimes(stamps: pd.Series) -> tuple[pd.Series, pd.Series]:
    delta = stamps - _EPOCH
    return (delta // _SECOND).astype("float64"), (delta % _SECOND) > pd.Timedelta(0)


def _label(value: str) -> str:
    """A tag from a label: lowercase, inner whitespace -> '-' ("Navy Blue" -> "navy-blue")."""
    return "-".join(value.lower().split())


def _unique(values: Iterable[str]) -> list[str]:
    """Drop duplicates and empties, keeping first-seen order."""
    return [v for v in dict.fromkeys(values) if v]


# --------------------------------------------------------------------------- frames


def _item_ids(external: pd.Series, always_dense: bool) -> tuple[np.ndarray, bool]:
    """Integer ids for unique external id strings, and whether they were remapped.

    Canonical positive integers are kept as they are. If any id is not one, every id is
    remapped to 1..N in sorted string order: mixing kept and dense ids could collide.
    """
    if not always_dense and external.str.fullmatch(_POSITIVE_INT).all():
        return external.astype("int64").to_numpy(), False
    order = sorted(external.tolist())
    rank = {key: i for i, key in enumerate(order, start=1)}
    return np.fromiter((rank[k] for k in external), dtype=np.int64, count=len(external)), True


def _items_frame(
    item_id: np.ndarray,
    title: Iterable[str],
    description: Iterable[str],
    category: Iterable[str],
    brand: Iterable[str],
    price: Iterable[float],
    tags: Iterable[list[str]],
    external_id: Iterable[str] | None = None,
) -> pd.DataFrame:
    items = pd.DataFrame(
        {
            "item_id": np.asarray(item_id, dtype=np.int64),
            "title": pd.Series(list(title), dtype="str"),
            "description": pd.Series(list(description), dtype="str"),
            "category": pd.Series(list(category), dtype="str"),
            "brand": pd.Series(list(brand), dtype="str"),
            "price": np.asarray(list(price), dtype=np.float64),
            "tags": pd.Series([list(t) for t in tags], dtype=object),
        }
    )
    if external_id is not None:
        items["external_id"] = pd.Series(list(external_id), dtype="str")
    return items.sort_values("item_id", ignore_index=True)


def _empty_interactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype="str"),
            "item_id": pd.Series([], dtype=np.int64),
            "timestamp": pd.Series([], dtype=np.int64),
        }
    )


def _finish_interactions(
    frame: pd.DataFrame, extra: tuple[str, ...], counts: dict[str, int]
) -> pd.DataFrame:
    """Merge exact duplicates, fix dtypes and sort by (user_id, timestamp).

    The sort is stable so events sharing a timestamp keep their file order.
    """
    key = ["user_id", "item_id", "timestamp", *extra]
    frame = _drop(frame, frame.duplicated(key), "duplicate", counts)
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("str").to_numpy(),
            "item_id": frame["item_id"].astype("int64").to_numpy(),
            "timestamp": frame["timestamp"].astype("int64").to_numpy(),
        }
    )
    for column in extra:
        out[column] = frame[column].astype("str").to_numpy()
    out["user_id"] = out["user_id"].astype("str")
    return out.sort_values(["user_id", "timestamp"], kind="stable", ignore_index=True)


def _clean_events(
    raw: pd.DataFrame,
    user: str,
    item: str,
    timestamp: str,
    counts: dict[str, int],
    notes: dict[str, int],
) -> pd.DataFrame:
    """Rename the key columns and drop rows with a missing id or an unparseable timestamp."""
    events = pd.DataFrame(
        {"user_id": _id_text(raw[user]), "item_key": _id_text(raw[item])}, index=raw.index
    )
    events = _drop(events, events["user_id"].isna(), "missing_user_id", counts)
    events = _drop(events, events["item_key"].isna(), "missing_item_id", counts)
    events["timestamp"] = _unix_seconds(raw.loc[events.index, timestamp], notes)
    return _drop(events, events["timestamp"].isna(), "unparseable_timestamp", counts)


def _attach_items(
    events: pd.DataFrame, external: pd.Series, item_id: np.ndarray, counts: dict[str, int]
) -> pd.DataFrame:
    """Map external item keys to item ids; events for keys not in the catalogue are dropped."""
    position = pd.Index(external).get_indexer(events["item_key"])
    # -1 (not found) picks the trailing 0, which also works for an empty catalogue.
    events = events.assign(item_id=np.append(item_id, 0)[position])
    return _drop(events, pd.Series(position < 0, index=events.index), "unknown_item", counts)


# --------------------------------------------------------------------------- MovieLens

_YEAR = re.compile(r"\((\d{4})(?:\s*[-–]\s*\d{4})?\)\s*$")


def load_movielens(path: str | Path) -> tuple[Dataset, LoadReport]:
    """Load GroupLens ml-latest-small (``ratings.csv``, ``movies.csv``, optional ``tags.csv``).

    Every rating is one implicit interaction (the star value is not used). All movies in
    ``movies.csv`` become items, rated or not: title as given, description the release year
    (or ""), category the first genre, brand "unknown", price 0.0, tags the normalised genres
    plus user tags that occur on at least ``MOVIELENS_MIN_TAG_MOVIES`` distinct movies.
    """
    folder = Path(path).expanduser()
    _require_files(
        "movielens", folder, ("ratings.csv", "movies.csv"), "expected the ml-latest-small folder"
    )
    report = LoadReport("movielens")
    movies, bad_movies = _read_csv(folder / "movies.csv", report.notes)
    _require_columns(movies, ("movieId", "title", "genres"), folder / "movies.csv")
    movies = _movielens_movies(movies, bad_movies, report)
    external = movies["key"]
    item_id = external.astype("int64").to_numpy()
    user_tags = _movielens_user_tags(folder / "tags.csv", set(external), report.notes)
    genres = movies["genres"].fillna(MOVIELENS_NO_GENRE).str.split("|")
    items = _items_frame(
        item_id=item_id,
        title=movies["title"],
        description=movies["title"].str.extract(_YEAR, expand=False).fillna(""),
        category=[g[0].strip() or MOVIELENS_NO_GENRE for g in genres],
        brand=[UNKNOWN] * len(movies),
        price=[0.0] * len(movies),
        tags=[
            _unique(
                [_label(g) for g in gs if g.strip() != MOVIELENS_NO_GENRE] + user_tags.get(k, [])
            )
            for gs, k in zip(genres, external, strict=True)
        ],
    )
    ratings, bad_ratings = _read_csv(folder / "ratings.csv", report.notes)
    _require_columns(ratings, ("userId", "movieId", "timestamp"), folder / "ratings.csv")
    report.rows_read = len(ratings) + bad_ratings
    _add(report.dropped, "bad_line", bad_ratings)
    events = _clean_events(ratings, "userId", "movieId", "timestamp", report.dropped, report.notes)
    events = _attach_items(events, external, item_id, report.dropped)
    interactions = _finish_interactions(events, (), report.dropped)
    report.rows_kept = len(interactions)
    return Dataset("movielens", items, interactions), report


def _movielens_movies(movies: pd.DataFrame, bad_lines: int, report: LoadReport) -> pd.DataFrame:
    """Movie rows with a valid, unique, positive integer id and a title."""
    report.items_read = len(movies) + bad_lines
    _add(report.items_dropped, "bad_line", bad_lines)
    movies = movies.assign(key=_id_text(movies["movieId"]), title=_text(movies["title"]))
    dropped = report.items_dropped
    movies = _drop(movies, movies["key"].isna(), "missing_item_id", dropped)
    movies = _drop(movies, ~movies["key"].str.fullmatch(_POSITIVE_INT), "invalid_item_id", dropped)
    movies = _drop(movies, movies["key"].duplicated(), "duplicate_item_id", dropped)
    movies = _drop(movies, movies["title"].isna(), "missing_title", dropped)
    report.items_kept = len(movies)
    return movies.reset_index(drop=True)


def _movielens_user_tags(
    path: Path, movies: set[str], notes: dict[str, int]
) -> dict[str, list[str]]:
    """Movie key -> user tags (lowercase, stripped) used on >= MOVIELENS_MIN_TAG_MOVIES movies.

    A tag seen on a single movie is one person's remark, not a reusable attribute.
    """
    if not path.is_file():
        _add(notes, "no_tags_file", 1)
        return {}
    tags, bad_lines = _read_csv(path, notes)
    _require_columns(tags, ("movieId", "tag"), path)
    frame = pd.DataFrame({"movie": _id_text(tags["movieId"]), "tag": _text(tags["tag"])})
    frame["tag"] = frame["tag"].str.lower().str.split().str.join(" ")
    usable = frame["movie"].isin(movies) & frame["tag"].notna()
    _add(notes, "tag_rows_ignored", bad_lines + int((~usable).sum()))
    frame = frame.loc[usable].drop_duplicates()
    support = frame.groupby("tag")["movie"].nunique()
    frame = frame.loc[frame["tag"].map(support) >= MOVIELENS_MIN_TAG_MOVIES]
    # Sorted per movie so the result does not depend on tags.csv row order.
    return {m: sorted(g) for m, g in frame.groupby("movie")["tag"]}


# --------------------------------------------------------------------------- fashion


def load_fashion(path: str | Path) -> tuple[Dataset, LoadReport]:
    """Load the Myntra fashion catalogue (``styles.csv``); a folder or the file itself.

    Catalogue only: interactions is empty. title = productDisplayName (rows without one are
    dropped: the set exists to learn tags from titles), description "", category =
    articleType (else subCategory, else "unknown"), brand = first word of the title (a proxy:
    multi-word brands such as "Peter England" are cut to their first word), price 0.0, tags =
    the label columns in ``FASHION_LABELS`` lowercased with spaces as '-'.
    """
    file = _single_file(
        "fashion", Path(path).expanduser(), "styles.csv", "expected the fashion-products folder"
    )
    report = LoadReport("fashion")
    raw, bad_lines = _read_csv(file, report.notes)
    _require_columns(raw, ("id", "productDisplayName", *FASHION_LABELS), file)
    report.items_read = len(raw) + bad_lines
    dropped = report.items_dropped
    _add(dropped, "bad_line", bad_lines)
    raw = raw.assign(key=_id_text(raw["id"]), title=_text(raw["productDisplayName"]))
    raw = _drop(raw, raw["key"].isna(), "missing_item_id", dropped)
    raw = _drop(raw, ~raw["key"].str.fullmatch(_POSITIVE_INT), "invalid_item_id", dropped)
    raw = _drop(raw, raw["key"].duplicated(), "duplicate_item_id", dropped)
    raw = _drop(raw, raw["title"].isna(), "missing_title", dropped)
    labels = {c: _text(raw[c]) for c in FASHION_LABELS}
    category = labels["articleType"].fillna(labels["subCategory"])
    _add(report.notes, "missing_category", int(category.isna().sum()))
    rows = zip(*(labels[c].fillna("").map(_label) for c in FASHION_LABELS), strict=True)
    items = _items_frame(
        item_id=raw["key"].astype("int64").to_numpy(),
        title=raw["title"],
        description=[""] * len(raw),
        category=category.fillna(UNKNOWN),
        brand=raw["title"].str.split().str[0],
        price=[0.0] * len(raw),
        tags=[_unique(row) for row in rows],
    )
    report.items_kept = len(items)
    return Dataset("fashion", items, _empty_interactions()), report


# --------------------------------------------------------------------------- online retail

# Service lines, not products: postage, carriage, manual/discount/sample/fee adjustments.
RETAIL_NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK"}
)

# Coarse category from description keywords. The first matching group wins, so the more
# specific groups come first ("CHRISTMAS CANDLE" is christmas, "LUNCH BAG" is bags).
_RETAIL_CATEGORY_WORDS: tuple[tuple[str, str], ...] = (
    ("christmas", "christmas xmas advent santa reindeer snowflake snowman nativity"),
    ("bags", "bag bags purse shopper tote handbag backpack rucksack"),
    (
        "lighting",
        "candle candles candleholder t-light t-lights tealight votive lantern lamp light lights "
        "nightlight chandelier",
    ),
    (
        "jewellery",
        "necklace bracelet ring rings earrings charm brooch bangle hair hairclip diamante",
    ),
    (
        "stationery",
        "card cards notebook pencil pencils pen pens paper wrap sticker stickers sketchbook "
        "tape envelope envelopes journal notepad eraser ruler calendar book books tissues stamp "
        "punch scissor postcard postcards",
    ),
    (
        "kitchen",
        "mug mugs cup cups saucer bowl bowls plate plates jar jars tray cutlery teapot tea cake "
        "cakestand cases egg kitchen baking spoon spoons beaker bottle lunch napkins dish "
        "pantry jam coffee recipe apron tin tins glass tumbler oven jelly",
    ),
    (
        "toys",
        "toy toys game games puzzle jigsaw doll dolly skipping ball playing spaceboy dominoes "
        "playhouse inflatable kit",
    ),
    ("garden", "garden plant planter watering parasol umbrella bird feeder herbs"),
    (
        "home-decor",
        "sign frame mirror clock cushion doormat decoration garland bunting hook hooks hanger "
        "drawer cabinet knob doorstop vase ornament wall tile magnets magnet wreath blanket "
        "throw storage box boxes decorations heart hearts mobile flower flowers bank trinket pot "
        "holder mat bucket star",
    ),
)
RETAIL_CATEGORIES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (category, frozenset(words.split())) for category, words in _RETAIL_CATEGORY_WORDS
)
RETAIL_OTHER = "other"

# Words that say nothing about the product, so never become tags.
_RETAIL_STOPWORDS = frozenset(["and", "the", "with", "for", "set", "of", "in", "pack", "des"])
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def load_online_retail(
    path: str | Path, tag_min_support: int = RETAIL_TAG_MIN_SUPPORT
) -> tuple[Dataset, LoadReport]:
    """Load the UCI Online Retail sample; a folder holding ``online_retail_sample40k.csv`` or
    the CSV file itself (any export with the same columns works).

    Each invoice line is a purchase by CustomerID of StockCode at InvoiceDate. Lines without
    a customer, cancellations/returns, non-positive quantities, service codes and unparseable
    dates are dropped and counted; duplicate (user, item, timestamp) lines are merged. Items
    are the SKUs of the kept lines, ids 1..N in sorted SKU order, ``external_id`` = SKU.
    """
    file = _single_file(
        "online-retail",
        Path(path).expanduser(),
        RETAIL_FILE,
        "expected the online-retail-sample folder",
    )
    report = LoadReport("online-retail")
    raw, bad_lines = _read_csv(file, report.notes)
    columns = (
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
    )
    _require_columns(raw, columns, file)
    report.rows_read = len(raw) + bad_lines
    _add(report.dropped, "bad_line", bad_lines)
    lines = _retail_lines(raw, report)
    skus = pd.Series(sorted(lines["item_key"].unique()), dtype="str")
    item_id, _ = _item_ids(skus, always_dense=True)
    events = _attach_items(lines, skus, item_id, report.dropped)
    # Merge duplicates first so a repeated line does not weigh twice in title and price.
    repeated = events.duplicated(["user_id", "item_id", "timestamp"])
    events = _drop(events, repeated, "duplicate", report.dropped)
    items = _retail_items(events, skus, item_id, tag_min_support, report.notes)
    interactions = _finish_interactions(events, (), report.dropped)
    report.items_read = report.items_kept = len(items)
    report.rows_kept = len(interactions)
    return Dataset("online-retail", items, interactions), report


def _retail_lines(raw: pd.DataFrame, report: LoadReport) -> pd.DataFrame:
    """Purchase lines with a customer, a product SKU, a positive quantity and a date."""
    dropped = report.dropped
    raw = raw.assign(CustomerID=_strip_float_suffix(_text(raw["CustomerID"])))
    raw = _drop(raw, raw["CustomerID"].isna(), "missing_user_id", dropped)
    raw = _drop(raw, _text(raw["StockCode"]).isna(), "missing_item_id", dropped)
    invoice = _text(raw["InvoiceNo"]).fillna("")
    raw = _drop(raw, invoice.str.upper().str.startswith("C"), "return_or_cancellation", dropped)
    quantity = pd.to_numeric(_text(raw["Quantity"]), errors="coerce")
    raw = _drop(raw, quantity.isna(), "unparseable_quantity", dropped)
    raw = _drop(raw, quantity.loc[raw.index] <= 0, "non_positive_quantity", dropped)
    service = _text(raw["StockCode"]).str.upper().isin(RETAIL_NON_PRODUCT_CODES)
    raw = _drop(raw, service, "non_product_code", dropped)
    raw = raw.assign(InvoiceDate=_iso_invoice_dates(raw["InvoiceDate"], report.notes))
    events = _clean_events(raw, "CustomerID", "StockCode", "InvoiceDate", dropped, report.notes)
    events["description"] = _text(raw.loc[events.index, "Description"]).str.split().str.join(" ")
    events["price"] = pd.to_numeric(_text(raw.loc[events.index, "UnitPrice"]), errors="coerce")
    _add(report.notes, "unparseable_price", int(events["price"].isna().sum()))
    return events


_SLASHED_DATE_TIME = re.compile(r"(?P<a>\d{1,2})/(?P<b>\d{1,2})/\d{4} \d{1,2}:[0-5]\d(?::[0-5]\d)?")


def _iso_invoice_dates(values: pd.Series, notes: dict[str, int]) -> pd.Series:
    """InvoiceDate as the sample has it (ISO-8601) also where a CSV export writes it
    slashed: month first as exports of the UCI workbook do ("12/1/2010 8:26"), or day first
    as a European spreadsheet saves it. The order is decided for the whole column — a
    first field above 12 means day first, a second one month first — and a column with
    both is refused rather than half misread. Noted as `month_first_invoice_date` or
    `day_first_invoice_date` (plus `invoice_date_order_assumed` where no field above 12
    decided it and month first, the UCI order, was taken)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    text = _text(values)
    fields = text.str.extract(f"^{_SLASHED_DATE_TIME.pattern}$")
    slashed = fields["a"].notna()
    if not slashed.any():
        return values
    first, second = fields["a"][slashed].astype(int), fields["b"][slashed].astype(int)
    day_first, month_first = bool((first > 12).any()), bool((second > 12).any())
    if day_first and month_first:
        raise DataError(
            "InvoiceDate mixes day-first and month-first dates (e.g. 13/1/2010 and "
            "1/13/2010); write them as ISO-8601"
        )
    if not day_first and not month_first:
        _add(notes, "invoice_date_order_assumed", int(slashed.sum()))
    order = "%d/%m/%Y" if day_first else "%m/%d/%Y"
    minutes = pd.to_datetime(text[slashed], format=f"{order} %H:%M", errors="coerce")
    seconds = pd.to_datetime(text[slashed], format=f"{order} %H:%M:%S", errors="coerce")
    parsed = minutes.fillna(seconds)
    key = "day_first_invoice_date" if day_first else "month_first_invoice_date"
    _add(notes, key, int(parsed.notna().sum()))
    iso = parsed.dt.strftime("%Y-%m-%dT%H:%M:%S").where(parsed.notna(), "invalid")
    return text.where(~slashed, iso)


def _retail_items(
    events: pd.DataFrame,
    skus: pd.Series,
    item_id: np.ndarray,
    tag_min_support: int,
    notes: dict[str, int],
) -> pd.DataFrame:
    """One item per SKU, derived from its kept lines."""
    counts = events.groupby(["item_key", "description"]).size().rename("n").reset_index()
    # Most common description per SKU; ties go to the alphabetically first for determinism.
    counts = counts.sort_values(["item_key", "n", "description"], ascending=[True, False, True])
    title = counts.drop_duplicates("item_key").set_index("item_key")["description"]
    title = title.reindex(skus)
    _add(notes, "missing_description", int(title.isna().sum()))
    title = title.fillna(pd.Series(skus.to_numpy(), index=skus.to_numpy()))
    price = events.groupby("item_key")["price"].median().reindex(skus)
    _add(notes, "missing_price", int(price.isna().sum()))
    words = [_retail_words(t) for t in title]
    vocabulary = _frequent(words, tag_min_support)
    return _items_frame(
        item_id=item_id,
        title=title,
        description=[""] * len(skus),
        category=[_retail_category(w) for w in words],
        brand=[UNKNOWN] * len(skus),
        price=price.fillna(0.0),
        tags=[[w for w in ws if w in vocabulary] for ws in words],
        external_id=skus,
    )


def _retail_words(title: str) -> list[str]:
    return _unique(w for w in _WORD.findall(title.lower()) if w not in _RETAIL_STOPWORDS)


def _frequent(word_lists: Iterable[list[str]], min_support: int) -> set[str]:
    """Words of at least three letters that occur in >= ``min_support`` of the lists."""
    support = Counter(w for words in word_lists for w in set(words))
    return {w for w, n in support.items() if n >= min_support and len(w) >= 3}


def _retail_category(words: list[str]) -> str:
    present = set(words)
    for category, keywords in RETAIL_CATEGORIES:
        if present & keywords:
            return category
    return RETAIL_OTHER


# --------------------------------------------------------------------------- generic

GENERIC_ITEM_DEFAULTS: dict[str, object] = {
    "description": "",
    "category": UNKNOWN,
    "brand": UNKNOWN,
}


def load_generic(path: str | Path) -> tuple[Dataset, LoadReport]:
    """Load a folder in the generic format: ``items.csv|parquet`` + ``interactions.csv|parquet``.

    items: item_id and title required; description, category, brand, price and tags optional
    (tags "|"-separated in CSV, a list in Parquet). interactions: user_id, item_id, timestamp
    (unix seconds or ISO-8601) and an optional event. Item ids that are not all positive
    integers are remapped to 1..N (sorted) with the original kept in ``external_id``.
    """
    folder = Path(path).expanduser()
    report = LoadReport("generic")
    items_file = _generic_file(folder, "items")
    events_file = _generic_file(folder, "interactions")
    raw_items, bad_items = _read_table(items_file, report.notes)
    _require_columns(raw_items, ("item_id", "title"), items_file)
    items, external, item_id = _generic_items(raw_items, bad_items, report)
    raw_events, bad_events = _read_table(events_file, report.notes)
    _require_columns(raw_events, ("user_id", "item_id", "timestamp"), events_file)
    report.rows_read = len(raw_events) + bad_events
    _add(report.dropped, "bad_line", bad_events)
    events = _clean_events(
        raw_events, "user_id", "item_id", "timestamp", report.dropped, report.notes
    )
    extra: tuple[str, ...] = ()
    if "event" in raw_events.columns:
        extra = ("event",)
        event = _text(raw_events.loc[events.index, "event"])
        _add(report.notes, "missing_event", int(event.isna().sum()))
        events["event"] = event.fillna("")
    events = _attach_items(events, external, item_id, report.dropped)
    interactions = _finish_interactions(events, extra, report.dropped)
    report.rows_kept = len(interactions)
    return Dataset("generic", items, interactions), report


def _generic_file(folder: Path, stem: str) -> Path:
    for suffix in (".parquet", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise FileNotFoundError(
        f"generic: neither {stem}.csv nor {stem}.parquet found in {folder} "
        "(see docs/data.md for the generic format)"
    )


def _generic_items(
    raw: pd.DataFrame, bad_lines: int, report: LoadReport
) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Items frame, plus the kept external ids and the item id assigned to each."""
    report.items_read = len(raw) + bad_lines
    dropped, notes = report.items_dropped, report.notes
    _add(dropped, "bad_line", bad_lines)
    raw = raw.assign(key=_id_text(raw["item_id"]))
    raw = _drop(raw, raw["key"].isna(), "missing_item_id", dropped)
    raw = _drop(raw, raw["key"].duplicated(), "duplicate_item_id", dropped).reset_index(drop=True)
    external = raw["key"].astype("str")
    item_id, remapped = _item_ids(external, always_dense=False)
    columns = {"title": _filled(raw, "title", "", notes)}
    columns.update({c: _filled(raw, c, d, notes) for c, d in GENERIC_ITEM_DEFAULTS.items()})
    items = _items_frame(
        item_id=item_id,
        price=_generic_price(raw, notes),
        tags=_generic_tags(raw),
        external_id=external if remapped else None,
        **columns,
    )
    report.items_kept = len(items)
    return items, external, item_id


def _filled(raw: pd.DataFrame, column: str, default: object, notes: dict[str, int]) -> pd.Series:
    """A text column with missing cells set to ``default`` (counted when the column exists)."""
    if column not in raw.columns:
        return pd.Series([default] * len(raw), dtype="str")
    values = _text(raw[column])
    _add(notes, f"missing_{column}", int(values.isna().sum()))
    return values.fillna(default)


def _generic_price(raw: pd.DataFrame, notes: dict[str, int]) -> pd.Series:
    if "price" not in raw.columns:
        return pd.Series(0.0, index=raw.index)
    text = raw["price"] if pd.api.types.is_numeric_dtype(raw["price"]) else _text(raw["price"])
    price = pd.to_numeric(text, errors="coerce").astype("float64")
    price = price.where(np.isfinite(price))
    _add(notes, "missing_price", int((text.isna()).sum()))
    _add(notes, "invalid_price", int((price.isna() & text.notna()).sum()))
    return price.fillna(0.0)


def _generic_tags(raw: pd.DataFrame) -> list[list[str]]:
    if "tags" not in raw.columns:
        return [[] for _ in range(len(raw))]
    return [_tag_list(value) for value in raw["tags"]]


def _tag_list(value: object) -> list[str]:
    """Tags from a "|"-separated string (CSV) or a list/array (Parquet), lowercased."""
    if isinstance(value, str):
        parts: Iterable[object] = value.split("|")
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = value
    else:  # missing
        return []
    return _unique(" ".join(str(p).lower().split()) for p in parts if p is not None)


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[[str | Path], tuple[Dataset, LoadReport]]] = {
    "movielens": load_movielens,
    "fashion": load_fashion,
    "online-retail": load_online_retail,
    "generic": load_generic,
}


def load_dataset(name: str, path: str | Path) -> tuple[Dataset, LoadReport]:
    """Load data set ``name`` from ``path`` (see ``DATASETS``)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}"
        ) from None
    return loader(path)

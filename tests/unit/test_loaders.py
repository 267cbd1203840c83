"""Data loaders: exact bad-row accounting on tiny fixtures, plus the real sets when present.

The fixtures are written by the tests themselves; the real data sets under ../shared/data are
only read in place (never copied) and those tests skip when the folder is absent.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recdata.loaders import (
    DATASETS,
    LoadReport,
    load_dataset,
    load_fashion,
    load_generic,
    load_movielens,
    load_online_retail,
)
from recdata.schema import Dataset, validate_dataset

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def unix(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp())


def rows(frame: pd.DataFrame, *columns: str) -> list[tuple]:
    return list(frame[list(columns)].itertuples(index=False, name=None))


def assert_balanced(report: LoadReport) -> None:
    assert report.rows_read == report.rows_kept + sum(report.dropped.values())
    assert report.items_read == report.items_kept + sum(report.items_dropped.values())


# --------------------------------------------------------------------------- MovieLens


@pytest.fixture
def movielens_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ml"
    write(
        folder,
        "movies.csv",
        """
        movieId,title,genres
        1,Toy Story (1995),Adventure|Animation|Children
        2,Blade Runner (1982),Sci-Fi|Film-Noir
        3,Untitled Thing,(no genres listed)
        4,Never Rated (2001),Drama
        """,
    )
    write(
        folder,
        "ratings.csv",
        """
        userId,movieId,rating,timestamp
        1,1,4.0,964982703
        1,2,5.0,964982000
        2,1,3.0,964983000
        ,1,3.0,964983001
        2,,3.0,964983002
        2,99,3.0,964983003
        2,2,3.0,notatime
        1,1,4.0,964982703
        3,1,4.0,964982703,extra
        10,3,2.5,964980000
        2,2,4.0,964983000
        """,
    )
    write(
        folder,
        "tags.csv",
        """
        userId,movieId,tag,timestamp
        1,1,Pixar,1
        2,4, pixar ,2
        1,2,dystopia,3
        2,2,Dystopia,4
        1,99,dystopia,5
        3,3,,6
        1,2,Sci-Fi,7
        3,4,SCI-FI,8
        """,
    )
    return folder


def test_movielens_counts_every_bad_rating(movielens_dir: Path) -> None:
    ds, report = load_movielens(movielens_dir)
    validate_dataset(ds)
    assert (report.rows_read, report.rows_kept) == (11, 5)
    assert report.dropped == {
        "bad_line": 1,
        "missing_user_id": 1,
        "missing_item_id": 1,
        "unknown_item": 1,
        "unparseable_timestamp": 1,
        "duplicate": 1,
    }
    # user ids sort as strings; a timestamp tie keeps file order
    assert rows(ds.interactions, "user_id", "item_id", "timestamp") == [
        ("1", 2, 964982000),
        ("1", 1, 964982703),
        ("10", 3, 964980000),
        ("2", 1, 964983000),
        ("2", 2, 964983000),
    ]
    assert_balanced(report)


def test_movielens_items_keep_every_movie_with_genre_and_shared_user_tags(
    movielens_dir: Path,
) -> None:
    ds, report = load_movielens(movielens_dir)
    items = ds.items
    assert items["item_id"].tolist() == [1, 2, 3, 4]  # movie 4 is unrated but kept
    assert items["category"].tolist() == ["Adventure", "Sci-Fi", "(no genres listed)", "Drama"]
    assert items["description"].tolist() == ["1995", "1982", "", "2001"]
    assert set(items["brand"]) == {"unknown"} and set(items["price"]) == {0.0}
    # "dystopia" is on one known movie only (movie 99 is unknown) -> not a tag
    assert items["tags"].tolist() == [
        ["adventure", "animation", "children", "pixar"],
        ["sci-fi", "film-noir"],
        [],
        ["drama", "pixar", "sci-fi"],
    ]
    assert report.notes == {"tag_rows_ignored": 2}
    assert (report.items_read, report.items_kept, report.items_dropped) == (4, 4, {})


# --------------------------------------------------------------------------- fashion

FASHION_CSV = """
id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName
15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011.0,Casual,Turtle Check Men Navy Blue Shirt
59263,Women,Accessories,Watches,Watches,Silver,Winter,2016.0,,Titan Women Silver Watch
7491,Women,Apparel,Bottomwear,Shorts,Pink,Summer,2011.0,Sports,"Nike Women's EM 3.5"" Pink Short"
100,Men,Apparel,Topwear,Tshirts,Red,Summer,2012.0,Casual,Brand, Comma Tee
101,Men,Apparel
102,Women,Accessories,Bags,Handbags,Black,Fall,2012.0,Casual,
15970,Men,Apparel,Topwear,Shirts,White,Fall,2011.0,Casual,Duplicate Shirt
abc,Men,Apparel,Topwear,Shirts,White,Fall,2011.0,Casual,Bad Id Shirt
,Men,Apparel,Topwear,Shirts,White,Fall,2011.0,Casual,No Id Shirt
103,Unisex,Footwear,Shoes,,Grey Melange,,2012.0,Casual,Puma Unisex Grey Shoes
"""


def test_fashion_skips_malformed_lines_and_derives_tags(tmp_path: Path) -> None:
    write(tmp_path, "styles.csv", FASHION_CSV)
    ds, report = load_fashion(tmp_path)
    validate_dataset(ds)
    assert (report.items_read, report.items_kept) == (10, 4)
    assert report.items_dropped == {
        "bad_line": 2,  # 11 fields (unquoted comma) and 3 fields
        "missing_item_id": 1,
        "invalid_item_id": 1,
        "duplicate_item_id": 1,
        "missing_title": 1,
    }
    assert (report.rows_read, report.dropped, report.notes) == (0, {}, {})
    items = ds.items.set_index("item_id")
    assert items.index.tolist() == [103, 7491, 15970, 59263]
    assert items.loc[7491, "title"] == "Nike Women's EM 3.5\" Pink Short"
    assert items["brand"].tolist() == ["Puma", "Nike", "Turtle", "Titan"]
    assert items["category"].tolist() == ["Shoes", "Shorts", "Shirts", "Watches"]
    assert items["tags"].tolist() == [
        ["unisex", "footwear", "shoes", "grey-melange", "casual"],
        ["women", "apparel", "bottomwear", "shorts", "pink", "summer", "sports"],
        ["men", "apparel", "topwear", "shirts", "navy-blue", "fall", "casual"],
        ["women", "accessories", "watches", "silver", "winter"],
    ]
    assert ds.interactions.empty
    assert list(ds.interactions.columns) == ["user_id", "item_id", "timestamp"]
    assert ds.interactions["item_id"].dtype == np.int64
    assert ds.interactions["timestamp"].dtype == np.int64


# --------------------------------------------------------------------------- online retail

RETAIL_CSV = """
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,UK
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,UK
536366,85123A,WHITE HANGING HEART T-LIGHT HOLDER ,2,2010-12-02 09:00:00,2.65,13047.0,UK
536367,85123A,CREAM HANGING HEART T-LIGHT HOLDER,1,2010-12-03 10:00:00,2.95,13047.0,UK
536368,22423,REGENCY CAKESTAND 3 TIER,1,2010-12-03 11:00:00,12.75,,UK
C536369,22423,REGENCY CAKESTAND 3 TIER,-1,2010-12-03 12:00:00,12.75,13047.0,UK
536370,22423,damaged,-5,2010-12-03 12:00:00,0,13047.0,UK
536371,22423,REGENCY CAKESTAND 3 TIER,1,not a date,12.75,13047.0,UK
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,UK
536372,POST,POSTAGE,1,2010-12-04 10:00:00,18.0,12583.0,France
536373,22423,REGENCY CAKESTAND 3 TIER,2,2010-12-04 11:00:00,10.95,12583.0,France
536374,22423,REGENCY CAKESTAND 3 TIER,1,2010-12-05 11:00:00,12.75,12583.0,France,extra
"""


def test_online_retail_drops_and_counts_each_bad_line(tmp_path: Path) -> None:
    write(tmp_path, "online_retail_sample40k.csv", RETAIL_CSV)
    ds, report = load_online_retail(tmp_path)
    validate_dataset(ds)
    assert (report.rows_read, report.rows_kept) == (12, 5)
    assert report.dropped == {
        "bad_line": 1,
        "missing_user_id": 1,
        "return_or_cancellation": 1,
        "non_positive_quantity": 1,
        "unparseable_timestamp": 1,
        "non_product_code": 1,
        "duplicate": 1,
    }
    assert rows(ds.interactions, "user_id", "item_id", "timestamp") == [
        ("12583", 1, unix("2010-12-04 11:00:00")),
        ("13047", 3, unix("2010-12-02 09:00:00")),
        ("13047", 3, unix("2010-12-03 10:00:00")),
        ("17850", 3, unix("2010-12-01 08:26:00")),
        ("17850", 2, unix("2010-12-01 08:26:00")),
    ]
    assert_balanced(report)


def _retail_with_dates(tmp_path: Path, dates: list[str]) -> tuple[Dataset, LoadReport]:
    header = RETAIL_CSV.strip().splitlines()[0]
    lines = [
        f"5363{i:02d},2242{i % 3},ITEM {i % 3},1,{date},2.5,1304{i % 2}.0,UK"
        for i, date in enumerate(dates)
    ]
    write(tmp_path, "online_retail_sample40k.csv", "\n".join([header, *lines]) + "\n")
    return load_online_retail(tmp_path)


def test_online_retail_reads_month_first_dates_of_uci_csv_exports(tmp_path: Path) -> None:
    """CSV exports of the full UCI workbook write InvoiceDate month first, without
    seconds; they mean the same instants as the sample's ISO dates."""
    ds, report = _retail_with_dates(
        tmp_path, ["12/1/2010 8:26", "12/2/2010 09:00:30", "12/31/2010 23:59", "2/30/2010 8:26"]
    )
    assert report.dropped == {"unparseable_timestamp": 1}  # there is no 30 February
    assert report.notes["month_first_invoice_date"] == 3
    assert "invoice_date_order_assumed" not in report.notes  # 31 decided it
    assert sorted(ds.interactions["timestamp"].tolist()) == [
        unix("2010-12-01 08:26:00"),
        unix("2010-12-02 09:00:30"),
        unix("2010-12-31 23:59:00"),
    ]


def test_online_retail_reads_day_first_dates_when_the_column_says_so(tmp_path: Path) -> None:
    ds, report = _retail_with_dates(tmp_path, ["01/12/2010 08:26", "13/12/2010 09:00"])
    assert report.notes["day_first_invoice_date"] == 2
    assert sorted(ds.interactions["timestamp"].tolist()) == [
        unix("2010-12-01 08:26:00"),  # 1 December, not 12 January
        unix("2010-12-13 09:00:00"),
    ]


def test_online_retail_refuses_dates_of_both_orders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mixes day-first and month-first"):
        _retail_with_dates(tmp_path, ["13/1/2010 8:26", "1/13/2010 8:26"])


def test_online_retail_notes_an_assumed_date_order(tmp_path: Path) -> None:
    ds, report = _retail_with_dates(tmp_path, ["1/2/2010 8:26", "2/1/2010 8:26:61"])
    assert report.notes["invoice_date_order_assumed"] == 1  # the 61st second is no date
    assert ds.interactions["timestamp"].tolist() == [unix("2010-01-02 08:26:00")]
    assert report.dropped == {"unparseable_timestamp": 1}  # no 61st second


def test_online_retail_skus_map_to_dense_ids_and_back(tmp_path: Path) -> None:
    write(tmp_path, "online_retail_sample40k.csv", RETAIL_CSV)
    ds, _ = load_online_retail(tmp_path, tag_min_support=2)
    items = ds.items.set_index("item_id")
    assert items["external_id"].to_dict() == {1: "22423", 2: "71053", 3: "85123A"}
    sku_to_id = dict(zip(ds.items["external_id"], ds.items["item_id"], strict=True))
    assert items.loc[sku_to_id["85123A"], "external_id"] == "85123A"
    # most common description (trailing space ignored), median price over kept lines
    assert items["title"].tolist() == [
        "REGENCY CAKESTAND 3 TIER",
        "WHITE METAL LANTERN",
        "WHITE HANGING HEART T-LIGHT HOLDER",
    ]
    assert items["price"].tolist() == [10.95, 3.39, 2.65]
    assert items["category"].tolist() == ["kitchen", "lighting", "lighting"]
    assert items["tags"].tolist() == [[], ["white"], ["white"]]  # "white" is in 2 titles
    assert set(items["brand"]) == {"unknown"}


# --------------------------------------------------------------------------- generic

GENERIC_ITEMS = pd.DataFrame(
    {
        "item_id": ["sku-b", "sku-a", "sku-c", "sku-a", None],
        "title": ["Blue Mug", "Red Shirt", "Plain Thing", "Duplicate Shirt", "No Id"],
        "description": ["A mug.", None, None, None, None],
        "category": ["kitchen", "apparel", None, "apparel", None],
        "brand": ["Acme", None, None, None, None],
        "price": [4.5, 12.0, np.nan, 1.0, np.nan],
        "tags": [["Blue", "Ceramic"], ["Red", " cotton ", "red"], [], [], []],
    }
)
GENERIC_EVENTS = pd.DataFrame(
    [
        ("u2", "sku-b", "2024-01-02T00:00:00Z", "view"),
        ("u1", "sku-a", "1704067200", "purchase"),
        ("u1", "sku-b", "2024-01-01T12:00:00", "view"),
        (None, "sku-a", "1704067200", "view"),
        ("u3", None, "1704067200", "view"),
        ("u3", "sku-z", "1704067200", "view"),
        ("u3", "sku-a", "yesterday", "view"),
        ("u1", "sku-a", "1704067200", "purchase"),
        ("u1", "sku-a", "1704067200", "view"),
        ("u2", "sku-c", "1704153600.5", None),
    ],
    columns=["user_id", "item_id", "timestamp", "event"],
)


def write_generic_csv(folder: Path) -> Path:
    folder.mkdir(parents=True)
    items = GENERIC_ITEMS.assign(tags=GENERIC_ITEMS["tags"].map("|".join))
    items.to_csv(folder / "items.csv", index=False)
    GENERIC_EVENTS.to_csv(folder / "interactions.csv", index=False)
    return folder


def write_generic_parquet(folder: Path) -> Path:
    folder.mkdir(parents=True)
    GENERIC_ITEMS.to_parquet(folder / "items.parquet", index=False)
    GENERIC_EVENTS.to_parquet(folder / "interactions.parquet", index=False)
    return folder


def test_generic_csv_counts_bad_rows_and_maps_string_ids(tmp_path: Path) -> None:
    ds, report = load_generic(write_generic_csv(tmp_path / "csv"))
    validate_dataset(ds)
    assert (report.items_read, report.items_kept) == (5, 3)
    assert report.items_dropped == {"missing_item_id": 1, "duplicate_item_id": 1}
    assert (report.rows_read, report.rows_kept) == (10, 5)
    assert report.dropped == {
        "missing_user_id": 1,
        "missing_item_id": 1,
        "unknown_item": 1,
        "unparseable_timestamp": 1,
        "duplicate": 1,  # same user, item, timestamp and event; another event is kept
    }
    assert report.notes == {
        "missing_description": 2,
        "missing_category": 1,
        "missing_brand": 2,
        "missing_price": 1,
        "missing_event": 1,
        "timestamp_fraction_floored": 1,
    }
    items = ds.items
    assert rows(items, "item_id", "external_id", "title", "category", "brand", "price") == [
        (1, "sku-a", "Red Shirt", "apparel", "unknown", 12.0),
        (2, "sku-b", "Blue Mug", "kitchen", "Acme", 4.5),
        (3, "sku-c", "Plain Thing", "unknown", "unknown", 0.0),
    ]
    assert items["tags"].tolist() == [["red", "cotton"], ["blue", "ceramic"], []]
    assert rows(ds.interactions, "user_id", "item_id", "timestamp", "event") == [
        ("u1", 1, 1704067200, "purchase"),
        ("u1", 1, 1704067200, "view"),
        ("u1", 2, 1704067200 + 12 * 3600, "view"),  # naive ISO time read as UTC
        ("u2", 2, 1704153600, "view"),
        ("u2", 3, 1704153600, ""),
    ]


def test_generic_csv_and_parquet_give_equal_datasets(tmp_path: Path) -> None:
    from_csv, csv_report = load_generic(write_generic_csv(tmp_path / "csv"))
    from_parquet, parquet_report = load_generic(write_generic_parquet(tmp_path / "parquet"))
    pd.testing.assert_frame_equal(from_csv.items, from_parquet.items)
    pd.testing.assert_frame_equal(from_csv.interactions, from_parquet.interactions)
    assert csv_report == parquet_report


def test_generic_keeps_positive_integer_ids_and_remaps_otherwise(tmp_path: Path) -> None:
    events = "user_id,item_id,timestamp\n7,20,100\n7,10,50\n"
    write(tmp_path / "ints", "items.csv", "item_id,title\n20,Twenty\n10,Ten\n")
    write(tmp_path / "ints", "interactions.csv", events)
    ds, _ = load_generic(tmp_path / "ints")
    assert ds.items["item_id"].tolist() == [10, 20]
    assert "external_id" not in ds.items.columns
    assert rows(ds.interactions, "item_id", "timestamp") == [(10, 50), (20, 100)]

    # one non-positive id -> every id is remapped (sorted as text) so none can collide
    write(tmp_path / "zero", "items.csv", "item_id,title\n20,Twenty\n10,Ten\n0,Zero\n")
    write(tmp_path / "zero", "interactions.csv", events)
    ds, _ = load_generic(tmp_path / "zero")
    assert rows(ds.items, "item_id", "external_id") == [(1, "0"), (2, "10"), (3, "20")]
    assert ds.interactions["item_id"].tolist() == [2, 3]
    validate_dataset(ds)


# --------------------------------------------------------------------------- registry


def test_load_dataset_dispatches_and_rejects_unknown_names(tmp_path: Path) -> None:
    write(tmp_path, "styles.csv", FASHION_CSV)
    ds, report = load_dataset("fashion", tmp_path)
    assert report.dataset == "fashion" and len(ds.items) == 4
    with pytest.raises(ValueError, match="fashion, generic, movielens, online-retail"):
        load_dataset("netflix", tmp_path)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_files_raise_a_helpful_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError, match=name):
        load_dataset(name, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"\.csv"):
        load_dataset(name, tmp_path / "empty")


def test_summary_has_one_line_per_reason() -> None:
    report = LoadReport(
        "x", rows_read=10, rows_kept=7, dropped={"duplicate": 1, "missing_user_id": 2}
    )
    assert report.summary().splitlines() == [
        "x: interactions 10 read, 7 kept; items 0 read, 0 kept",
        "  dropped interaction rows, duplicate: 1",
        "  dropped interaction rows, missing_user_id: 2",
    ]


# --------------------------------------------------------------------------- real data sets


def shared(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.skip(f"real data set not present at {path}")
    return path


def test_real_movielens_matches_the_readme() -> None:
    ds, report = load_movielens(shared("movielens-latest-small"))
    validate_dataset(ds)
    assert (report.rows_read, report.rows_kept, report.dropped) == (100_836, 100_836, {})
    assert ds.interactions["user_id"].nunique() == 610
    assert len(ds.items) == 9_742
    assert ds.items["tags"].map(len).gt(0).mean() > 0.99


def test_real_fashion_matches_the_readme() -> None:
    ds, report = load_fashion(shared("fashion-products"))
    validate_dataset(ds)
    assert abs(report.items_read - 44_446) <= 5
    assert abs(len(ds.items) - 44_446) <= 20
    assert ds.interactions.empty
    assert ds.items["tags"].map(len).ge(5).all()
    assert_balanced(report)


def test_real_online_retail_matches_the_readme() -> None:
    ds, report = load_online_retail(shared("online-retail-sample"))
    validate_dataset(ds)
    assert report.rows_read == 40_000
    assert 3_400 <= ds.interactions["user_id"].nunique() <= 3_700
    assert 0.2 < report.dropped["missing_user_id"] / report.rows_read < 0.3
    assert not ds.interactions["user_id"].str.contains(".", regex=False).any()
    assert ds.items["external_id"].is_unique and len(ds.items) <= 3_227
    assert_balanced(report)


def test_csv_ids_stay_text_and_latin1_files_are_decoded(tmp_path: Path) -> None:
    # "007" and "7" are different ids; a quoted title may span lines
    write(tmp_path / "g", "items.csv", 'item_id,title\n007,"Two\nLines"\n7,Seven\n')
    write(tmp_path / "g", "interactions.csv", "user_id,item_id,timestamp\nu,007,5\nu,7,6\n")
    ds, _ = load_generic(tmp_path / "g")
    assert rows(ds.items, "item_id", "external_id", "title") == [
        (1, "007", "Two\nLines"),
        (2, "7", "Seven"),
    ]
    assert ds.interactions["item_id"].tolist() == [1, 2]

    header = RETAIL_CSV.strip().splitlines()[0]
    line = "1,gift_0001_20,GIFT VOUCHER £20.00,1,2011-01-01 10:00:00,20,12345.0,UK"
    (tmp_path / "retail.csv").write_bytes(f"{header}\n{line}\n".encode("latin-1"))
    ds, report = load_online_retail(tmp_path / "retail.csv")
    assert ds.items["title"].tolist() == ["GIFT VOUCHER £20.00"]
    assert report.notes == {"decoded_as_latin1": 1}


def test_parquet_numeric_ids_and_datetime_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    items = pd.DataFrame({"item_id": [5, 9], "title": ["Five", "Nine"]})
    items.to_parquet(folder / "items.parquet")
    events = pd.DataFrame(
        {
            "user_id": [12.0, np.nan, 12.0],  # a missing id made the column float
            "item_id": [9, 5, 5],
            "timestamp": pd.to_datetime(
                ["2024-01-01 00:00:01", "2024-01-01", "2024-01-01"], format="ISO8601"
            ),
        }
    )
    events.to_parquet(folder / "interactions.parquet")
    ds, report = load_generic(folder)
    validate_dataset(ds)
    assert report.dropped == {"missing_user_id": 1}
    assert rows(ds.interactions, "user_id", "item_id", "timestamp") == [
        ("12", 5, 1704067200),
        ("12", 9, 1704067201),
    ]

"""Loaders: happy paths for the three formats, every malformed-input guard, and the real S3-Rec files."""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from mmsr_bench.data.loaders import (find_data_root, format_categories, load_amazon_2014, load_amazon_2023, load_s3rec,
                                     load_sequence_file, read_item_text_tsv, read_items_tsv, read_users_tsv)
from mmsr_bench.data.splits import RawDataset
from mmsr_bench.errors import DataError, UnknownName


def write(path: Path, text: str, gz: bool = False) -> Path:
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# ------------------------------------------------------------------------------------------- sequence file format

ITEMS_TSV = ("s3rec_item_id\tasin\ttitle\tcategories_json\n"
             "1\tA1\tMelissa &amp; Doug &quot;Blocks&quot;\t[[\"Toys & Games\", \"Blocks\"], [\"Kids\", \"Fun\"]]\n"
             "2\tA2\t\t[[\"Beauty\", \"Nails\"]]\n"
             "3\tA3\tPlain\t\n"
             "4\tA4\tUnused\t[[\"X\"]]\n")


def test_sequence_file_happy_path_with_items(tmp_path: Path) -> None:
    seq = write(tmp_path / "d.txt", "1 1 2 3\n\n2 3 1\n3\t2 3 5 1\n")
    items = write(tmp_path / "d_items.tsv", ITEMS_TSV)
    ds = load_sequence_file(seq, items_tsv=items, name="demo")
    assert isinstance(ds, RawDataset)
    assert ds.name == "demo" and ds.ratings is None and ds.source == str(seq)
    assert ds.user_ids == ["1", "2", "3"]
    assert ds.sequences == [["1", "2", "3"], ["3", "1"], ["2", "3", "5", "1"]]
    # exactly the items in the sequences, first-appearance order; item 5 has no row, item 4 is unused
    assert list(ds.items.index) == ["1", "2", "3", "5"]
    assert list(ds.items.columns) == ["asin", "title", "categories"]
    assert ds.items.loc["1", "title"] == 'Melissa & Doug "Blocks"'
    assert ds.items.loc["1", "categories"] == "Toys & Games > Blocks; Kids > Fun"
    assert ds.items.loc["2", "title"] is None
    assert ds.items.loc["3", "categories"] is None
    assert ds.items.loc["1", "asin"] == "A1"
    assert ds.items.loc["5"].isna().all()


def test_sequence_file_without_tables_and_gz(tmp_path: Path) -> None:
    seq = write(tmp_path / "d.txt.gz", "10 007 8\n11 8 9\n", gz=True)
    ds = load_sequence_file(seq)
    assert ds.sequences == [["7", "8"], ["8", "9"]]  # ids canonicalised
    assert list(ds.items.index) == ["7", "8", "9"] and ds.items.columns.empty


def test_sports_style_table_and_users_tsv(tmp_path: Path) -> None:
    seq = write(tmp_path / "s.txt", "1 2 1\n2 1 2\n")
    items = write(tmp_path / "s_items.tsv", "s3rec_item_id\tasin\n1\tB1\n2\tB2\n")
    users = write(tmp_path / "s_users.tsv", "s3rec_user_id\treviewerID\n1\tR1\n2\tR2\n")
    ds = load_sequence_file(seq, items_tsv=items, users_tsv=users)
    assert ds.items.to_dict("index") == {"2": {"asin": "B2"}, "1": {"asin": "B1"}}
    assert ds.user_ids == ["1", "2"] and read_users_tsv(users) == {"1": "R1", "2": "R2"}
    short = write(tmp_path / "u2.tsv", "s3rec_user_id\treviewerID\n1\tR1\n")
    with pytest.raises(DataError, match=r"u2\.tsv.*user 2 on line 2"):
        load_sequence_file(seq, users_tsv=short)


@pytest.mark.parametrize("text, line, needle", [
    ("1 1 2\n2 1 x3\n", 2, "'x3'"),
    ("1 1 2\n2 1 -3\n", 2, "'-3'"),
    ("1 1 2\nu9 1 3\n", 2, "user id"),
    ("1 1 2\n\n\n4\n", 4, "no items"),
    ("1 1 2\n2 2 3\n1 3 4\n", 3, "also on line 1"),
])
def test_sequence_file_malformed(tmp_path: Path, text: str, line: int, needle: str) -> None:
    seq = write(tmp_path / "bad.txt", text)
    with pytest.raises(DataError) as err:
        load_sequence_file(seq)
    msg = str(err.value)
    assert "bad.txt" in msg and f"line {line}:" in msg and needle in msg


@pytest.mark.parametrize("text", ["", "\n  \n\t\n"])
def test_sequence_file_empty(tmp_path: Path, text: str) -> None:
    seq = write(tmp_path / "empty.txt", text)
    with pytest.raises(DataError, match=r"empty\.txt.*empty file"):
        load_sequence_file(seq)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.txt: file not found"):
        load_sequence_file(tmp_path / "nope.txt")


def test_id_sorted_share_and_repeated_targets_are_measured() -> None:
    import numpy as np

    from mmsr_bench.data import quality

    sorted_dump = [["1", "2", "5"], ["3", "4"], ["2", "7", "9"], ["8", "3"]]
    seqs = [np.array([1, 2, 3]), np.array([4, 5, 4]), np.array([1, 3, 2]), np.array([6, 7])]
    q = quality.check("x", sorted_dump, seqs, np.arange(4))
    assert q.sorted_share == 0.75 and q.repeat_target_share == 0.25 and len(q.warnings) == 2
    assert "75% of 4 sequences are strictly increasing" in q.warnings[0]
    timed = quality.check("x", [["1", "2", "5"], ["4", "3"], ["9", "1"]], [np.array([1, 2, 3])] * 3, np.arange(3))
    assert timed.sorted_share == pytest.approx(1 / 3, abs=1e-6) and timed.warnings == ()
    asins = quality.check("x", [["B01", "A02"], ["A01", "B02"]], [np.array([1, 2])] * 2, np.arange(2))
    assert asins.sorted_share == 0.5  # string ids compare as strings


@pytest.mark.parametrize("text, line, needle", [
    ("s3rec_item_id\tasin\n1\tA\n1\tB\n", 3, "duplicate"),
    ("s3rec_item_id\tasin\nx\tA\n", 2, "not a non-negative integer"),
    ("s3rec_item_id\tasin\ttitle\tcategories_json\n1\tA\tT\t[[\"a\"\n", 2, "categories_json"),
    ("s3rec_item_id\tasin\n1\tA\tB\tC\n", 2, "fields"),
    ("asin\ttitle\nA\tT\n", 1, "no item id column"),
])
def test_items_tsv_malformed(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = write(tmp_path / "bad_items.tsv", text)
    with pytest.raises(DataError) as err:
        read_items_tsv(path)
    assert "bad_items.tsv" in str(err.value) and f"line {line}:" in str(err.value) and needle in str(err.value)


def test_item_text_tsv_happy_path(tmp_path: Path) -> None:
    path = write(tmp_path / "d_item_descriptors.tsv",
                 "s3rec_item_id\tasin\tdescriptor\n01\tA1\tkirkland  trail sock \n\n2\t\tgun &amp; rod rack\n")
    frame = read_item_text_tsv(path)
    assert list(frame.index) == ["1", "2"]
    assert frame.loc["1", "text"] == "kirkland  trail sock" and frame.loc["2", "text"] == "gun & rod rack"
    assert frame.loc["1", "asin"] == "A1" and frame.loc["2", "asin"] is None
    assert frame["line"].tolist() == [2, 4]  # blank lines still count


@pytest.mark.parametrize("text, where, needle", [
    ("s3rec_item_id\tasin\tdescriptor\n1\tA\tx\n1\tB\ty\n", "line 3:", "duplicate s3rec_item_id 1"),
    ("s3rec_item_id\tasin\tdescriptor\nx\tA\tsock\n", "line 2:", "not a non-negative integer"),
    ("s3rec_item_id\tasin\tdescriptor\n1\tA\tsock\n2\tB\t\n", "line 3:", "empty descriptor for s3rec_item_id 2"),
    ("s3rec_item_id\tasin\tdescriptor\n1\tA\tsock\tred\n", "line 2:", "4 tab-separated fields"),
    ("s3rec_item_id\tasin\ttext_id\n1\tA\tsock\n", "line 1:", "one of descriptor, title"),
    ("asin\tdescriptor\nA\tsock\n", "line 1:", "s3rec_item_id (or item_id)"),
    ("s3rec_item_id\tasin\tdescriptor\n", "", "header but no rows"),
    ("", "", "empty file"),
])
def test_item_text_tsv_malformed(tmp_path: Path, text: str, where: str, needle: str) -> None:
    path = write(tmp_path / "bad_descriptors.tsv", text)
    with pytest.raises(DataError) as err:
        read_item_text_tsv(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and where in msg and needle in msg


def test_item_text_tsv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.tsv: item text file not found.*item_text"):
        read_item_text_tsv(tmp_path / "nope.tsv")


def test_format_categories() -> None:
    assert format_categories([["A", "B"], ["A", "B"], ["C"]]) == "A > B; C"
    assert format_categories(["A", "B &amp; C"]) == "A > B & C"
    assert format_categories([]) is None and format_categories(None) is None


# ----------------------------------------------------------------------------------------------- Amazon 2014/2018


REVIEWS_2014 = [
    {"reviewerID": "U1", "asin": "I2", "overall": 4.0, "unixReviewTime": 1_400_000_100},
    {"reviewerID": "U2", "asin": "I1", "overall": 5.0, "unixReviewTime": 1_300_000_000},
    {"reviewerID": "U1", "asin": "I1", "overall": 3.0, "unixReviewTime": 1_400_000_000},
    {"reviewerID": "U1", "asin": "I3", "overall": 2.0, "unixReviewTime": 1_400_000_100},  # tie with line 1
    {"reviewerID": "U1", "asin": "I4", "overall": 1.0, "unixReviewTime": 1_400_000_100},  # tie again
    # 1_400_000_001 and 1_400_000_000 collapse to the same float32; an integer sort keeps them apart
    {"reviewerID": "U2", "asin": "I3", "overall": 1.0, "unixReviewTime": 1_400_000_001},
    {"reviewerID": "U2", "asin": "I2", "overall": 2.0, "unixReviewTime": 1_400_000_000},
]

META_2014 = (
    "{'asin': 'I1', 'title': 'Tom &amp; Jerry', 'brand': 'ACME', 'categories': [['Beauty', 'Nails'], ['Sale']], "
    "'description': 'Nice', 'imUrl': 'http://x/i1.jpg'}\n"
    "{'asin': 'I9', 'title': 'never reviewed'}\n"
    '{"asin": "I2", "title": "Json line", "category": ["Toys", "Lego"], "description": ["a", "b"], '
    '"image": ["http://x/i2a.jpg", "http://x/i2b.jpg"]}\n'
    "\n"
    "{'asin': 'I1', 'title': 'duplicate ignored'}\n"
)


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2014_happy_path(tmp_path: Path, gz: bool) -> None:
    suffix = ".json.gz" if gz else ".json"
    reviews = write(tmp_path / f"reviews_Beauty_5{suffix}", jsonl(REVIEWS_2014), gz=gz)
    meta = write(tmp_path / f"meta_Beauty{suffix}", META_2014, gz=gz)
    ds = load_amazon_2014(reviews, meta)
    assert ds.name == "Beauty"
    assert ds.user_ids == ["U1", "U2"]
    assert ds.sequences == [["I1", "I2", "I3", "I4"], ["I1", "I2", "I3"]]
    assert ds.ratings == [[3.0, 4.0, 2.0, 1.0], [5.0, 2.0, 1.0]]
    assert list(ds.items.index) == ["I2", "I1", "I3", "I4"]
    i1, i2 = ds.items.loc["I1"], ds.items.loc["I2"]
    assert i1["title"] == "Tom & Jerry" and i1["brand"] == "ACME" and i1["categories"] == "Beauty > Nails; Sale"
    assert i1["description"] == "Nice" and i1["image"] == "http://x/i1.jpg"
    assert i2["title"] == "Json line" and i2["categories"] == "Toys > Lego" and i2["description"] == "a b"
    assert i2["image"] == "http://x/i2a.jpg" and i2["brand"] is None
    assert ds.items.loc["I3"].isna().all()  # no metadata row: all None


def test_amazon_2014_without_meta_or_ratings(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "overall"} for r in REVIEWS_2014]
    ds = load_amazon_2014(write(tmp_path / "r.json", jsonl(rows)), name="x")
    assert ds.ratings is None and ds.name == "x" and ds.items.columns.empty


@pytest.mark.parametrize("line2, needle", [
    ('{"reviewerID": "U1", "asin": "I1", "overall": 5', "not valid JSON"),
    ('["U1", "I1"]', "expected a JSON object"),
    ('{"reviewerID": "U1", "overall": 5, "unixReviewTime": 1}', "missing required field 'asin'"),
    ('{"reviewerID": "U1", "asin": "I1", "overall": 5}', "missing required field 'unixReviewTime'"),
    ('{"reviewerID": "U1", "asin": "I1", "unixReviewTime": 1.5}', "not an integer timestamp"),
    ('{"reviewerID": "U1", "asin": "I1", "unixReviewTime": 1, "overall": "five"}', "not a number"),
])
def test_amazon_2014_bad_review_line(tmp_path: Path, line2: str, needle: str) -> None:
    ok = json.dumps(REVIEWS_2014[0])
    path = write(tmp_path / "reviews_bad.json", f"{ok}\n{line2}\n")
    with pytest.raises(DataError) as err:
        load_amazon_2014(path)
    assert "reviews_bad.json line 2:" in str(err.value) and needle in str(err.value)


def test_amazon_2014_empty_reviews(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"r\.json.*empty file"):
        load_amazon_2014(write(tmp_path / "r.json", "\n"))


@pytest.mark.parametrize("line, needle", [
    ("['I1', 'title']", "expected a dict"),
    ("{'asin': 'I1', 'title': __import__('os').getcwd()}", "neither JSON nor a Python literal"),
    ("{'title': 'no asin'}", "missing required field 'asin'"),
    ("{'asin': 'I1', 'categories': 5}", "bad field value"),
])
def test_amazon_2014_bad_meta_line(tmp_path: Path, line: str, needle: str) -> None:
    reviews = write(tmp_path / "r.json", jsonl(REVIEWS_2014))
    meta = write(tmp_path / "meta_bad.json", "{'asin': 'I2', 'title': 'ok'}\n" + line + "\n")
    with pytest.raises(DataError) as err:
        load_amazon_2014(reviews, meta)
    assert "meta_bad.json line 2:" in str(err.value) and needle in str(err.value)


# ---------------------------------------------------------------------------------------------------- Amazon 2023


def test_amazon_2023_happy_path(tmp_path: Path) -> None:
    reviews = [
        {"user_id": "A", "asin": "c1", "parent_asin": "P1", "rating": 5.0, "timestamp": 1_600_000_000_500},
        {"user_id": "A", "asin": "c2", "parent_asin": "P2", "rating": 4.0, "timestamp": 1_600_000_000_100},
        {"user_id": "B", "asin": "c3", "parent_asin": "P1", "rating": 3.0, "timestamp": 1_600_000_000_100},
        {"user_id": "A", "asin": "c4", "parent_asin": "P3", "rating": 1.0, "timestamp": 1_600_000_000_100},
    ]
    meta = [
        {"parent_asin": "P1", "title": "Lip &amp; Cheek", "store": "Brand1", "categories": ["Beauty", "Lips"],
         "description": ["Great", "stuff"],
         "images": [{"thumb": "t.jpg", "large": "l.jpg", "hi_res": "h.jpg", "variant": "MAIN"}]},
        {"parent_asin": "P2", "title": "Two", "store": None, "categories": [], "description": [],
         "images": [{"thumb": "t2.jpg", "large": None, "hi_res": "h2.jpg"}]},
    ]
    ds = load_amazon_2023(write(tmp_path / "All_Beauty.jsonl", jsonl(reviews)),
                          write(tmp_path / "meta_All_Beauty.jsonl.gz", jsonl(meta), gz=True))
    assert ds.name == "All_Beauty"
    assert ds.user_ids == ["A", "B"]
    assert ds.sequences == [["P2", "P3", "P1"], ["P1"]]
    assert ds.ratings == [[4.0, 1.0, 5.0], [3.0]]
    p1, p2 = ds.items.loc["P1"], ds.items.loc["P2"]
    assert p1["title"] == "Lip & Cheek" and p1["brand"] == "Brand1" and p1["categories"] == "Beauty > Lips"
    assert p1["description"] == "Great stuff" and p1["image"] == "l.jpg"
    assert p2["image"] == "h2.jpg" and p2["brand"] is None and p2["categories"] is None and p2["description"] is None
    assert ds.items.loc["P3"].isna().all()


def test_amazon_2023_missing_field(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", '{"user_id": "A", "asin": "c1", "rating": 5, "timestamp": 1}\n')
    with pytest.raises(DataError, match=r"x\.jsonl line 1: missing required field 'parent_asin'"):
        load_amazon_2023(path)


# ------------------------------------------------------------------------------------------------------ data root


def test_find_data_root_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSR_BENCH_DATA", str(tmp_path))
    assert find_data_root() == tmp_path
    monkeypatch.setenv("MMSR_BENCH_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="MMSR_BENCH_DATA"):
        find_data_root()


def test_load_s3rec_names(tmp_path: Path) -> None:
    (tmp_path / "amazon-s3rec").mkdir()
    write(tmp_path / "amazon-s3rec" / "Toys_and_Games.txt", "1 2 1\n")
    assert load_s3rec("toys", root=tmp_path).name == "Toys_and_Games"
    with pytest.raises(UnknownName, match="Beauty"):
        load_s3rec("beuaty", root=tmp_path)


# ------------------------------------------------------------------------------------------------------ real data



def _real_root() -> Path | None:
    try:
        return find_data_root()
    except DataError:  # $MMSR_BENCH_DATA set but wrong: skip the real-data tests, the unit test above covers it
        return None


_ROOT = _real_root()
REAL = [("Beauty", 22_363, 12_101, 198_502), ("Sports_and_Outdoors", 35_598, 18_357, 296_337),
        ("Toys_and_Games", 19_412, 11_924, 167_597)]


@pytest.mark.realdata
@pytest.mark.skipif(_ROOT is None or not (_ROOT / "amazon-s3rec").is_dir(),
                    reason="real data absent: set $MMSR_BENCH_DATA or place it at <repo>/../shared/data")
@pytest.mark.parametrize("dataset, n_users, n_items, n_inter", REAL)
def test_real_s3rec_files(dataset: str, n_users: int, n_items: int, n_inter: int,
                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmsr_bench.data.loaders"):
        ds = load_s3rec(dataset)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no id-sorted warning, no gaps
    lengths = [len(s) for s in ds.sequences]
    item_counts = Counter(i for s in ds.sequences for i in s)
    assert (len(ds.user_ids), len(item_counts), sum(lengths)) == (n_users, n_items, n_inter)
    assert min(lengths) >= 5 and min(item_counts.values()) >= 5  # 5-core
    assert len(ds.items) == n_items and ds.items["asin"].notna().all()
    assert set(ds.items.index) == set(item_counts)
    if dataset == "Beauty":
        titles = ds.items["title"]
        assert titles.notna().sum() == n_items - 7  # README: 7 empty titles
        assert not titles.dropna().str.contains("&amp;").any()
        assert isinstance(ds.items.loc["1", "title"], str) and ds.items.loc["1", "categories"].startswith("Beauty")
    if dataset == "Sports_and_Outdoors":
        assert list(ds.items.columns) == ["asin"]
    assert isinstance(ds.items, pd.DataFrame)

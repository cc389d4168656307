"""Loaders: turn source files into :class:`mmsr_bench.data.splits.RawDataset` (external string ids, time-ordered sequences).

Three formats are supported:

- :func:`load_sequence_file`: the processed S3-Rec format (``user_id item_id item_id ...`` per line, position = time),
  optionally joined with an item table TSV (:func:`read_items_tsv`) and a user table TSV (:func:`read_users_tsv`).
- :func:`load_amazon_2014`: raw Amazon 2014/2018 ``reviews_<Category>_5.json.gz`` + ``meta_<Category>.json.gz``.
- :func:`load_amazon_2023`: Amazon Reviews 2023 JSONL (``<Category>.jsonl`` + ``meta_<Category>.jsonl``).

Conventions shared by all loaders (so downstream code never has to care which format it came from):

- External ids are strings. Integer ids from sequence files are canonicalised (``"007"`` -> ``"7"``).
- ``user_ids`` / ``sequences`` keep the order of first appearance in the source file.
- The item table is indexed by external item id (index name ``ext_id``, object dtype), covers exactly the items that
  occur in the sequences (in order of first appearance), has object columns among ``asin, title, brand, categories,
  description, image``, and uses ``None`` for missing values. Items absent from the side table get all-``None`` rows
  (logged as a warning).
- ``categories`` is readable text: every category path joined with ``" > "``, distinct paths joined with ``"; "``
  (e.g. ``"Beauty > Makeup > Nails; Beauty > Tools"``). Titles, brands, descriptions and categories are
  ``html.unescape``-d because Amazon text carries entities such as ``&amp;``.
- Raw review files are sorted per user by (integer timestamp, original line order) with a stable sort, so ties keep
  file order. Files may be gzip-compressed or plain (detected from the magic bytes, not the extension).
- Blank (whitespace-only) lines are skipped everywhere; they still count for the line numbers in error messages.

Every malformed input raises :class:`mmsr_bench.errors.DataError` naming the file and line and what to do. Nothing is
ever executed: Python-literal metadata is parsed with :func:`ast.literal_eval`.

Why one module of this length: one reader per raw format (Amazon 2014 reviews and meta, the S3-Rec files, the
synthetic tables) into one RawDataset, with their shared id and time handling.
"""

from __future__ import annotations

import ast
import difflib
import gzip
import html
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from mmsr_bench.data.splits import RawDataset
from mmsr_bench.errors import DataError, UnknownName
from mmsr_bench.progress import track

log = logging.getLogger(__name__)

#: Item-table columns loaders may produce, in output order.
ITEM_TABLE_COLUMNS = ("asin", "title", "brand", "categories", "description", "image")

#: Processed S3-Rec datasets under ``<data root>/amazon-s3rec`` and the short names accepted for them.
S3REC_DATASETS = ("Beauty", "Sports_and_Outdoors", "Toys_and_Games")
_S3REC_ALIASES = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "sports_and_outdoors": "Sports_and_Outdoors",
                  "toys": "Toys_and_Games", "toys_and_games": "Toys_and_Games"}

_INT_LINE = re.compile(r"[0-9]{1,19}(?:[ \t]+[0-9]{1,19})*")
_INT_TOKEN = re.compile(r"[0-9]{1,19}")  # ids fit a signed 64-bit integer (a 5,000-digit "id" is not one)
_PROGRESS_EVERY = 20_000


# ----------------------------------------------------------------------------------------------------------- files


def find_data_root() -> Path | None:
    """Where the real benchmark data lives, or ``None`` when it is not on this machine.

    ``$MMSR_BENCH_DATA`` wins when set (an error if it points nowhere, since the user asked for it explicitly);
    otherwise the first existing of ``<repo root>/../shared/data`` and ``./../shared/data``.
    """
    env = os.environ.get("MMSR_BENCH_DATA", "").strip()
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError(f"$MMSR_BENCH_DATA={env!r} is not a directory; point it at the folder holding "
                            "amazon-s3rec/ and amazon-joined/, or unset it")
        return root
    from mmsr_bench.paths import REPO_ROOT as repo_root

    for cand in (repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None


def _open_text(path: Path) -> io.TextIOBase:
    """Open a UTF-8 text file that may be gzip-compressed (sniffed from the magic bytes)."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, but a data file is expected here")
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path (raw Amazon files are named "
                        "reviews_<Category>_5.json.gz / meta_<Category>.json.gz)")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


#: The longest line read from a data file (a heavy user's sequence or one product's metadata is far shorter); a
#: longer line is refused before it is held in memory whole.
MAX_LINE_CHARS = 16 << 20


def _short(value: object, n: int = 80) -> str:
    """``repr`` of at most ``n`` characters of a value from a data file, for error messages (a bad input is quoted,
    never copied whole into a message)."""
    text = str(value)
    return repr(text[:n]) + (f"… ({len(text):,} characters)" if len(text) > n else "")


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number from 1, stripped line)`` for non-blank lines; decoding errors become DataError, and a
    line longer than :data:`MAX_LINE_CHARS` is refused."""
    lineno = 0
    try:
        with _open_text(path) as fh:
            while True:
                line = fh.readline(MAX_LINE_CHARS + 1)
                if not line:
                    break
                lineno += 1
                if len(line) > MAX_LINE_CHARS:
                    raise DataError(f"{path} line {lineno}: longer than {MAX_LINE_CHARS:,} characters; not a data "
                                    "line (a damaged or wrong file?)")
                s = line.strip()
                if s:
                    yield lineno, s
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} around line {lineno + 1}: not valid UTF-8 ({exc.reason}); "
                        "re-encode the file as UTF-8") from exc
    except (OSError, EOFError) as exc:  # truncated / corrupt gzip
        raise DataError(f"{path} after line {lineno}: cannot read file ({exc}); re-download it") from exc


def _canon_int(token: str) -> str:
    """Canonical string of a non-negative integer token (strip leading zeros)."""
    return token.lstrip("0") or "0"


# ------------------------------------------------------------------------------------------------- text helpers


def _unique_item_id(raw: str, lineno: int, path: Path, id_col: str, first_line: dict[str, int]) -> str:
    """An item table row's id, canonical and unique (``first_line`` maps ids seen so far to their line)."""
    raw_id = raw.strip()
    if not _INT_TOKEN.fullmatch(raw_id):
        raise DataError(f"{path} line {lineno}: {id_col}={_short(raw_id)} is not a non-negative integer")
    ext = _canon_int(raw_id)
    if ext in first_line:
        raise DataError(f"{path} line {lineno}: duplicate {id_col} {ext} (first on line {first_line[ext]}); "
                        "keep one row per item")
    first_line[ext] = lineno
    return ext


def _clean_text(value: Any) -> str | None:
    """Unescaped, stripped text or None for missing/empty values; lists are joined with spaces."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [_clean_text(v) for v in value]
        value = " ".join(p for p in parts if p)
    elif isinstance(value, float) and math.isnan(value):
        return None
    elif not isinstance(value, str):
        value = str(value)
    text = html.unescape(value).strip()
    return text or None


def format_categories(value: Any) -> str | None:
    """Readable categories: each path joined with ``" > "``, distinct paths joined with ``"; "``.

    Accepts a list of paths (Amazon 2014 ``categories``, the TSV's ``categories_json``), a flat list (one path:
    Amazon 2018 ``category``, 2023 ``categories``) or a string. Returns None for empty values.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _clean_text(value)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of category paths, got {type(value).__name__}")
    if all(not isinstance(v, (list, tuple)) for v in value):
        paths = [value]
    else:
        paths = [v if isinstance(v, (list, tuple)) else [v] for v in value]
    out: list[str] = []
    for p in paths:
        names = [_clean_text(c) for c in p]
        text = " > ".join(n for n in names if n)
        if text and text not in out:
            out.append(text)
    return "; ".join(out) or None


def _first_image(rec: dict) -> str | None:
    """First image URL of a metadata record in any of the 2014 (imUrl), 2018 (image list) or 2023 (images) forms."""
    url = rec.get("imUrl")
    if isinstance(url, str) and url.strip():
        return url.strip()
    for key in ("image", "imageURLHighRes", "imageURL"):
        val = rec.get(key)
        if isinstance(val, str) and val.strip():
            return val.strip()
        if isinstance(val, (list, tuple)):
            for v in val:
                if isinstance(v, str) and v.strip():
                    return v.strip()
    images = rec.get("images")
    if isinstance(images, (list, tuple)):
        for img in images:
            if isinstance(img, dict):
                for key in ("large", "hi_res", "thumb"):
                    v = img.get(key)
                    if isinstance(v, str) and v.strip():
                        return v.strip()
            elif isinstance(img, str) and img.strip():
                return img.strip()
    return None


# ----------------------------------------------------------------------------------------------- TSV side tables


def _read_tsv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Header and ``(line number, fields)`` rows of a plain tab-separated file (no quoting: titles contain ``"``)."""
    lines = _iter_lines(path)
    try:
        _, header_line = next(lines)
    except StopIteration:
        raise DataError(f"{path}: empty file; expected a tab-separated header line and rows") from None
    header = [h.strip() for h in header_line.split("\t")]

    def rows() -> Iterator[tuple[int, list[str]]]:
        for lineno, line in lines:
            fields = line.split("\t")
            if len(fields) < len(header):  # trailing empty fields were stripped with the line's whitespace
                fields += [""] * (len(header) - len(fields))
            if len(fields) != len(header):
                raise DataError(f"{path} line {lineno}: {len(fields)} tab-separated fields, header has "
                                f"{len(header)} ({', '.join(header)}); fix the row (tabs inside a value?)")
            yield lineno, fields

    return header, rows()


def read_items_tsv(path: str | Path) -> pd.DataFrame:
    """Read an item table TSV (``amazon-joined/*_items.tsv``) into a frame indexed by external item id.

    The id column is ``s3rec_item_id``, ``mmrec_item_id`` or ``item_id`` (the first present). ``asin``, ``title``,
    ``brand``, ``description`` are kept as text (html-unescaped), ``categories_json`` (a JSON list of category
    paths) becomes readable ``categories`` (see :func:`format_categories`), ``imUrl``/``image`` becomes ``image``.
    Empty cells become None. Duplicate or non-integer ids and bad JSON raise DataError with the line number.
    """
    path = Path(path)
    header, rows = _read_tsv(path)
    id_col = next((c for c in ("s3rec_item_id", "mmrec_item_id", "item_id") if c in header), None)
    if id_col is None:
        raise DataError(f"{path} line 1: no item id column (expected one of s3rec_item_id, mmrec_item_id, item_id; "
                        f"header is {header})")
    rename = {"asin": "asin", "title": "title", "brand": "brand", "description": "description",
              "categories_json": "categories", "categories": "categories", "imUrl": "image", "image": "image"}
    cols = {c: header.index(c) for c in header if c in rename}
    id_idx = header.index(id_col)
    ids: list[str] = []
    data: dict[str, list[str | None]] = {rename[c]: [] for c in cols}
    first_line: dict[str, int] = {}
    for lineno, fields in rows:
        ext = _unique_item_id(fields[id_idx], lineno, path, id_col, first_line)
        ids.append(ext)
        for c, i in cols.items():
            raw = fields[i].strip()
            if c == "categories_json":
                if not raw:
                    val = None
                else:
                    try:
                        val = format_categories(json.loads(raw))
                    except (ValueError, TypeError) as exc:
                        raise DataError(f"{path} line {lineno}: categories_json is not a JSON list of category "
                                        f"paths ({exc}); fix the cell or leave it empty") from exc
            elif c in ("asin", "imUrl", "image"):
                val = raw or None
            else:
                val = _clean_text(raw)
            data[rename[c]].append(val)
    if not ids:
        raise DataError(f"{path}: header but no rows; expected one row per item")
    frame = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in data.items()})
    frame.index = pd.Index(ids, dtype=object, name="ext_id")
    return frame[[c for c in ITEM_TABLE_COLUMNS if c in frame.columns]]


#: Accepted text columns of an item-text TSV (:func:`read_item_text_tsv`), in order of preference.
ITEM_TEXT_COLUMNS = ("descriptor", "title")


def read_item_text_tsv(path: str | Path) -> pd.DataFrame:
    """Read an item-text TSV (``amazon-joined/*_item_descriptors.tsv``: ``s3rec_item_id, asin, descriptor``).

    Returns a frame indexed by external item id with ``text`` (html-unescaped, stripped), ``asin`` (None when the
    file has no asin column) and ``line`` (the row's line number, for error messages). Every row must carry text:
    an item without any is left out of the file rather than given an empty cell, so that a gap is visible. A missing
    file, a header without an id or text column, a non-integer or duplicate id or an empty text cell raise DataError
    naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: item text file not found; check the suite's item_text path (relative to the data "
                        "root)")
    header, rows = _read_tsv(path)
    id_col = next((c for c in ("s3rec_item_id", "item_id") if c in header), None)
    text_col = next((c for c in ITEM_TEXT_COLUMNS if c in header), None)
    if id_col is None or text_col is None:
        raise DataError(f"{path} line 1: expected columns s3rec_item_id (or item_id) and one of "
                        f"{', '.join(ITEM_TEXT_COLUMNS)}; header is {header}")
    id_idx, text_idx = header.index(id_col), header.index(text_col)
    asin_idx = header.index("asin") if "asin" in header else None
    ids: list[str] = []
    texts: list[str] = []
    asins: list[str | None] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for lineno, fields in rows:
        ext = _unique_item_id(fields[id_idx], lineno, path, id_col, first_line)
        text = _clean_text(fields[text_idx])
        if text is None:
            raise DataError(f"{path} line {lineno}: empty {text_col} for {id_col} {ext}; give it text or drop the row")
        ids.append(ext)
        texts.append(text)
        asins.append((fields[asin_idx].strip() or None) if asin_idx is not None else None)
        lines.append(lineno)
    if not ids:
        raise DataError(f"{path}: header but no rows; expected one row per item")
    frame = pd.DataFrame({"text": pd.Series(texts, dtype=object), "asin": pd.Series(asins, dtype=object),
                          "line": np.asarray(lines, dtype=np.int64)})
    frame.index = pd.Index(ids, dtype=object, name="ext_id")
    return frame


def read_users_tsv(path: str | Path) -> dict[str, str]:
    """Map external (S3-Rec) user id -> reviewerID from ``amazon-joined/*_users.tsv``."""
    path = Path(path)
    header, rows = _read_tsv(path)
    if len(header) < 2 or header[0] not in ("s3rec_user_id", "user_id"):
        raise DataError(f"{path} line 1: expected header 's3rec_user_id<TAB>reviewerID', got {header}")
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, fields in rows:
        raw = fields[0].strip()
        if not _INT_TOKEN.fullmatch(raw):
            raise DataError(f"{path} line {lineno}: user id {_short(raw)} is not a non-negative integer")
        uid = _canon_int(raw)
        if uid in first_line:
            raise DataError(f"{path} line {lineno}: duplicate user id {uid} (first on line {first_line[uid]})")
        first_line[uid] = lineno
        out[uid] = fields[1].strip()
    return out


def _align_items(items: pd.DataFrame | None, item_order: list[str], source: str) -> pd.DataFrame:
    """Reindex a side table to exactly the items in the sequences (first-appearance order); None for gaps."""
    index = pd.Index(item_order, dtype=object, name="ext_id")
    if items is None:
        return pd.DataFrame(index=index)
    present = index.isin(items.index)
    n_missing = int((~present).sum())
    if n_missing:
        examples = ", ".join(map(str, index[~present][:5]))
        log.warning("%s: %d of %d items have no row in the item table (e.g. %s); their text/image fields are None",
                    source, n_missing, len(index), examples)
    n_extra = len(items.index) - int(present.sum())
    if n_extra:
        log.info("%s: %d item-table rows are not used by any sequence and were dropped", source, n_extra)
    out = items.reindex(index).astype(object)
    return out.where(out.notna(), None)


# ---------------------------------------------------------------------------------------------- sequence format


def _bad_token_message(path: Path, lineno: int, line: str) -> str:
    for pos, tok in enumerate(line.split(), 1):
        if not _INT_TOKEN.fullmatch(tok):
            what = "user id" if pos == 1 else f"item #{pos - 1}"
            return (f"{path} line {lineno}: token {_short(tok)} ({what}) is not a non-negative integer of at most 19 "
                    "digits; each line must be "
                    "'user_id item_id item_id ...' separated by spaces or tabs")
    return f"{path} line {lineno}: cannot parse {line[:80]!r}; expected 'user_id item_id item_id ...'"


def load_sequence_file(path: str | Path, items_tsv: str | Path | None = None, users_tsv: str | Path | None = None,
                       name: str | None = None) -> RawDataset:
    """Load the processed one-user-per-line format ``user_id item_id item_id ...`` (position = time order).

    ``items_tsv`` adds the item table (:func:`read_items_tsv`; its ids must be the file's item ids).
    ``users_tsv`` (``s3rec_user_id<TAB>reviewerID``) is only checked to cover every user: user ids stay the file's
    ids so that they line up with the published files; use :func:`read_users_tsv` for the reviewerID map.
    Blank lines are skipped. A bad token, a user without items, a duplicate user or an empty file raise DataError
    naming the file and line(s). Whether the order is time order (not an id-sorted dump) is checked at build time
    for every source (:mod:`mmsr_bench.data.quality`).
    """
    path = Path(path)
    name = name or path.stem
    user_ids: list[str] = []
    sequences: list[list[str]] = []
    user_line: dict[str, int] = {}
    for lineno, line in _iter_lines(path):
        if not _INT_LINE.fullmatch(line):
            raise DataError(_bad_token_message(path, lineno, line))
        toks = line.split()
        uid = _canon_int(toks[0])
        if len(toks) < 2:
            raise DataError(f"{path} line {lineno}: user {uid} has no items; remove the line or add its items")
        if uid in user_line:
            raise DataError(f"{path} line {lineno}: duplicate user id {uid} (also on line {user_line[uid]}); "
                            "each user must be on exactly one line")
        user_line[uid] = lineno
        seq = [_canon_int(t) for t in toks[1:]]
        user_ids.append(uid)
        sequences.append(seq)
    if not sequences:
        raise DataError(f"{path}: empty file (no user lines); expected 'user_id item_id item_id ...' per line")

    if users_tsv is not None:
        users = read_users_tsv(users_tsv)
        missing = [u for u in user_ids if u not in users]
        if missing:
            raise DataError(f"{users_tsv}: {len(missing)} users of {path} have no row (e.g. user {missing[0]} on "
                            f"line {user_line[missing[0]]}); use the user table that belongs to this file")

    item_order = list(dict.fromkeys(i for seq in sequences for i in seq))
    items = read_items_tsv(items_tsv) if items_tsv is not None else None
    table = _align_items(items, item_order, str(path))
    n_inter = sum(len(s) for s in sequences)
    log.info("%s: %d users, %d items, %d interactions", name, len(user_ids), len(item_order), n_inter)
    return RawDataset(name=name, user_ids=user_ids, sequences=sequences, items=table, ratings=None,
                      source=str(path))


def load_s3rec(dataset: str, root: str | Path | None = None) -> RawDataset:
    """Load one of the shared S3-Rec datasets (Beauty, Sports_and_Outdoors, Toys_and_Games) with its item table.

    ``root`` defaults to :func:`find_data_root`. Short names ``sports``/``toys`` are accepted.
    """
    key = _S3REC_ALIASES.get(dataset.lower())
    if key is None:
        close = difflib.get_close_matches(dataset, [*S3REC_DATASETS, *_S3REC_ALIASES], n=3)
        raise UnknownName(f"unknown S3-Rec dataset {dataset!r}; choose one of {', '.join(S3REC_DATASETS)}"
                          + (f" (closest: {', '.join(close)})" if close else ""))
    base = Path(root) if root is not None else find_data_root()
    if base is None:
        raise DataError("real data not found: set $MMSR_BENCH_DATA to the folder holding amazon-s3rec/ and "
                        "amazon-joined/, or place it at <repo>/../shared/data")
    seq = base / "amazon-s3rec" / f"{key}.txt"
    items = base / "amazon-joined" / f"{key}_items.tsv"
    users = base / "amazon-joined" / f"{key}_users.tsv"
    return load_sequence_file(seq, items_tsv=items if items.is_file() else None,
                              users_tsv=users if users.is_file() else None, name=key)


# ---------------------------------------------------------------------------------------------- raw review files


#: Largest |timestamp| accepted (2**62: any second- or millisecond-resolution date fits, and int64 arithmetic on
#: it cannot overflow).
MAX_TIMESTAMP = 2 ** 62


def _as_int_time(value: Any) -> int | None:
    """Integer timestamp from an int, an integral float or a digit string; None when not integral."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value.strip())
    return None


def _as_rating(value: Any) -> float | None:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _read_reviews(path: Path, user_key: str, item_key: str, time_key: str, rating_key: str
                  ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Parse a JSON-lines review file into aligned users, items, int64 times and float ratings (NaN = missing)."""
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    ratings: list[float] = []
    with track(f"reading {path.name}") as task:
        for lineno, line in _iter_lines(path):
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise DataError(f"{path} line {lineno}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); "
                                "fix or remove the line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {lineno}: expected a JSON object, got {type(rec).__name__}")
            for key in (user_key, item_key, time_key):
                if rec.get(key) in (None, ""):
                    raise DataError(f"{path} line {lineno}: missing required field {key!r} (a review needs "
                                    f"{user_key}, {item_key} and {time_key})")
            for key in (user_key, item_key):
                if isinstance(rec[key], bool) or not isinstance(rec[key], (str, int)):
                    raise DataError(f"{path} line {lineno}: {key} must be a string or an integer id, got "
                                    f"{type(rec[key]).__name__}")
            t = _as_int_time(rec[time_key])
            if t is None:
                raise DataError(f"{path} line {lineno}: {time_key}={str(rec[time_key])[:80]!r} is not an integer "
                                "timestamp")
            if not -MAX_TIMESTAMP <= t <= MAX_TIMESTAMP:
                raise DataError(f"{path} line {lineno}: {time_key}={t:.3g} is outside the range of a timestamp "
                                f"(|t| <= {MAX_TIMESTAMP:.2g})")
            r = _as_rating(rec.get(rating_key))
            if r is None:
                raise DataError(f"{path} line {lineno}: {rating_key}={_short(rec[rating_key])} is not a number")
            users.append(str(rec[user_key]))
            items.append(str(rec[item_key]))
            times.append(t)
            ratings.append(r)
            if len(users) % _PROGRESS_EVERY == 0:
                task.advance(_PROGRESS_EVERY)
    if not users:
        raise DataError(f"{path}: no reviews (empty file); expected one JSON object per line")
    return users, items, np.asarray(times, dtype=np.int64), np.asarray(ratings, dtype=np.float64)


def _group_sequences(users: list[str], items: list[str], times: np.ndarray, ratings: np.ndarray
                     ) -> tuple[list[str], list[list[str]], list[list[float]] | None]:
    """Per-user sequences sorted by (time, line order) with a stable sort; users in first-appearance order."""
    codes, uniques = pd.factorize(pd.Series(users, dtype=object), sort=False)
    line = np.arange(len(users), dtype=np.int64)
    order = np.lexsort((line, times, codes))  # last key is primary; lexsort is stable
    counts = np.bincount(codes, minlength=len(uniques))
    bounds = np.cumsum(counts)[:-1]
    item_arr = np.asarray(items, dtype=object)[order]
    sequences = [chunk.tolist() for chunk in np.split(item_arr, bounds)]
    rating_out: list[list[float]] | None = None
    if not np.isnan(ratings).all():
        rating_out = [chunk.tolist() for chunk in np.split(ratings[order], bounds)]
    return [str(u) for u in uniques], sequences, rating_out


_RecordFn = Callable[[dict], dict[str, Any]]


def _parse_literal_line(line: str) -> Any:
    """JSON first (2018/2023 files), then a Python literal (2014 files); never eval."""
    try:
        return json.loads(line)
    except ValueError:
        pass
    return ast.literal_eval(line)


def _read_meta(path: Path, id_key: str, wanted: set[str], extract: _RecordFn) -> pd.DataFrame:
    """Read a metadata file (JSON or Python-literal lines), keeping only items in ``wanted``.

    Lines whose id can be read cheaply with a regex and is not wanted are skipped without being parsed (full 2014
    meta files hold ~20x more items than the 5-core reviews); every other line must parse to a dict with ``id_key``.
    The first record of a duplicated id wins.
    """
    id_re = re.compile(r"""["']%s["']\s*:\s*["']([^"'\\]+)["']""" % re.escape(id_key))
    rows: dict[str, dict[str, Any]] = {}
    n_dup = 0
    with track(f"reading {path.name}") as task:
        for lineno, line in _iter_lines(path):
            if lineno % _PROGRESS_EVERY == 0:
                task.advance(_PROGRESS_EVERY)
            m = id_re.search(line)
            if m is not None and m.group(1) not in wanted:
                continue
            try:
                rec = _parse_literal_line(line)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                raise DataError(f"{path} line {lineno}: neither JSON nor a Python literal ({type(exc).__name__}: "
                                f"{exc}); fix or remove the line") from exc
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {lineno}: expected a dict/object per line, got {type(rec).__name__}")
            ext = rec.get(id_key)
            if ext in (None, ""):
                raise DataError(f"{path} line {lineno}: missing required field {id_key!r}")
            ext = str(ext)
            if ext not in wanted:
                continue
            if ext in rows:
                n_dup += 1
                continue
            try:
                rows[ext] = extract(rec)
            except (ValueError, TypeError) as exc:
                raise DataError(f"{path} line {lineno}: bad field value ({exc})") from exc
    if n_dup:
        log.info("%s: %d duplicate metadata records ignored (first record per item kept)", path, n_dup)
    if wanted and not rows:
        raise DataError(f"{path}: none of the {len(wanted)} items of the reviews has a record in this metadata file "
                        f"(empty, or another category's file); expected one {id_key!r} record per line")
    cols = [c for c in ITEM_TABLE_COLUMNS if c != "asin"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=cols, dtype=object)
    frame.index = pd.Index(frame.index, dtype=object, name="ext_id")
    return frame


def _extract_2014(rec: dict) -> dict[str, Any]:
    cats = rec.get("categories", rec.get("category"))
    return {"title": _clean_text(rec.get("title")), "brand": _clean_text(rec.get("brand")),
            "categories": format_categories(cats) if cats else None,
            "description": _clean_text(rec.get("description")), "image": _first_image(rec)}


def _extract_2023(rec: dict) -> dict[str, Any]:
    cats = rec.get("categories")
    return {"title": _clean_text(rec.get("title")), "brand": _clean_text(rec.get("store") or rec.get("brand")),
            "categories": format_categories(cats) if cats else None,
            "description": _clean_text(rec.get("description")), "image": _first_image(rec)}


def _load_reviews_dataset(reviews_path: str | Path, meta_path: str | Path | None, name: str | None,
                          keys: tuple[str, str, str, str], meta_id: str, extract: _RecordFn) -> RawDataset:
    path = Path(reviews_path)
    users, items, times, ratings = _read_reviews(path, *keys)
    user_ids, sequences, rating_seqs = _group_sequences(users, items, times, ratings)
    item_order = list(dict.fromkeys(items))
    meta = _read_meta(Path(meta_path), meta_id, set(item_order), extract) if meta_path is not None else None
    table = _align_items(meta, item_order, str(meta_path or path))
    if name is None:
        name = re.sub(r"^(reviews_)|(_5)?(\.jsonl?|\.json)?(\.gz)?$", "", path.name) or path.name
    log.info("%s: %d users, %d items, %d interactions", name, len(user_ids), len(item_order), len(users))
    return RawDataset(name=name, user_ids=user_ids, sequences=sequences, items=table, ratings=rating_seqs,
                      source=str(path))


def load_amazon_2014(reviews_path: str | Path, meta_path: str | Path | None = None,
                     name: str | None = None) -> RawDataset:
    """Load raw Amazon 2014/2018 review files (``reviews_<Category>_5.json.gz``, ``meta_<Category>.json.gz``).

    Reviews: one JSON object per line with reviewerID, asin, unixReviewTime (integer seconds) and overall (rating).
    Each user's interactions are sorted by (unixReviewTime, line order), stably; ratings come from ``overall``
    (NaN for a review without one; None when no review has one). Meta (2014: Python-literal dicts, 2018: JSON)
    gives title, brand, categories, description and the first image URL (``imUrl`` in 2014, ``image`` list in
    2018). No k-core filtering here.
    """
    return _load_reviews_dataset(reviews_path, meta_path, name, ("reviewerID", "asin", "unixReviewTime", "overall"),
                                 "asin", _extract_2014)


def load_amazon_2023(reviews_jsonl: str | Path, meta_jsonl: str | Path | None = None,
                     name: str | None = None) -> RawDataset:
    """Load Amazon Reviews 2023 JSONL files; ``parent_asin`` is the item id, ``timestamp`` is in milliseconds.

    Meta gives title, store (-> brand), categories, description (list joined with spaces) and the first image's
    ``large`` (else ``hi_res``, else ``thumb``) URL. No k-core filtering here.
    """
    return _load_reviews_dataset(reviews_jsonl, meta_jsonl, name, ("user_id", "parent_asin", "timestamp", "rating"),
                                 "parent_asin", _extract_2023)



def read_meta(path: str | Path, asins: set[str]) -> pd.DataFrame:
    """Metadata (title, brand, categories, description, image) of the given ASINs from a raw Amazon 2014/2018
    ``meta_<Category>.json(.gz)`` or 2023 ``meta_<Category>.jsonl`` file, indexed by ASIN."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    head = _open_text(path).readline()
    if "parent_asin" in head:
        return _read_meta(path, "parent_asin", asins, _extract_2023)
    return _read_meta(path, "asin", asins, _extract_2014)

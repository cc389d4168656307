"""Materialize a suite's datasets into content-hashed artifacts, verify them, and load them for a run.

Artifacts per dataset (``$MMSR_BENCH_HOME/suites/<suite>/<dataset>/``), all byte-deterministic:

- ``sequences.tsv``: processed, time-ordered sequences with internal item ids (the processed interactions)
- ``items.tsv``: item side information (title, brand, categories, description, image reference)
- ``images.tsv``: for local images, a manifest of each image's relative path and the sha256 of its decoded pixels
- ``eval_users.npy``: the evaluation users; ``targets.npy``: their (validation, test) targets (the split)
- ``candidates_valid.npy`` / ``candidates_test.npy``: shared candidates, target in column 0 (sampled protocols)

A run re-hashes every artifact against the suite spec and refuses to start on any mismatch, naming the file.

Why one module of this length: materialising, verifying and loading a frozen suite share one hashing of the same
artifacts; apart, they could drift.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import shutil
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmsr_bench.data import quality
from mmsr_bench.data.splits import ITEM_TEXT_FIELDS, EvalSplit, ItemTable, RawDataset, TrainData
from mmsr_bench.errors import BenchError, DataError, HashMismatch
from mmsr_bench.paths import bench_home, cache_dir, configured_image_roots, inside
from mmsr_bench.suites.spec import DatasetSpec, SuiteSpec

log = logging.getLogger(__name__)

ITEM_FILE_COLUMNS = ("item", "ext_id", "asin", *ITEM_TEXT_FIELDS, "image", "image_description")
HASHED_FILES = ("sequences.tsv", "items.tsv", "eval_users.npy", "targets.npy")


# ----------------------------------------------------------------------------------------------- source loading
def raw_dir(kind: str) -> Path:
    """Where ``bench data import`` puts raw Amazon files."""
    return cache_dir("raw", kind)


def _amazon_category(spec: DatasetSpec) -> str:
    return spec.category or spec.name


def suite_ref(suite: SuiteSpec) -> str:
    """How a command names this suite: its name when it is one of the shipped specs, else the path of its file (a
    suite given by path is found by path only; hints that named it by name failed)."""
    from mmsr_bench.suites.spec import suite_files

    shipped = suite_files().get(suite.name)
    if shipped is not None and suite.path and Path(suite.path).resolve() == shipped.resolve():
        return suite.name
    return suite.path or suite.name


def raw_files(spec: DatasetSpec) -> tuple[str, list[str]]:
    """(raw folder kind, the file names a dataset reads from it) for datasets built from raw Amazon files, the
    published name first (``bench data fetch`` downloads those); ``("", [])`` for the others. One list for
    ``bench data import`` and ``bench data fetch``."""
    cat = _amazon_category(spec)
    if spec.source == "amazon2014":
        return "amazon2014", [f"reviews_{cat}_5.json.gz", f"meta_{cat}.json.gz", f"reviews_{cat}_5.json",
                              f"meta_{cat}.json"]
    if spec.source == "amazon2023":
        return "amazon2023", [f"{cat}.jsonl", f"meta_{cat}.jsonl"]
    if spec.meta:
        return "amazon2014", [spec.meta]
    return "", []


def missing_data_message(suite: SuiteSpec, spec: DatasetSpec) -> str:
    others = [d.name for d in suite.datasets if d.name != spec.name]
    if spec.source == "sequence":
        what = f"{spec.path} (and {spec.items})" if spec.items else spec.path
        where = "put it in the data root ($MMSR_BENCH_DATA, or ../shared/data next to the repository)"
    elif spec.source == "amazon2014":
        cat = _amazon_category(spec)
        what = f"reviews_{cat}_5.json.gz and meta_{cat}.json.gz (Amazon Reviews 2014, McAuley et al.)"
        where = (f"put them in a folder DIR and run `bench data import {suite.name} --from DIR` "
                 f"(copies them into {raw_dir('amazon2014')})")
    else:
        cat = _amazon_category(spec)
        what = f"{cat}.jsonl and meta_{cat}.jsonl (Amazon Reviews 2023)"
        where = (f"put them in a folder DIR and run `bench data import {suite.name} --from DIR` "
                 f"(copies them into {raw_dir('amazon2023')})")
    alt = f" To run the others: --dataset {','.join(others)}." if others else ""
    return f"dataset {spec.name!r} of suite {suite.name!r} is missing: download {what}, then {where}.{alt}"


def load_source(suite: SuiteSpec, spec: DatasetSpec, out_dir: Path) -> RawDataset:
    """Load one dataset's raw form. Synthetic data writes its images into ``out_dir/images``."""
    from mmsr_bench.data import loaders

    if spec.source == "synth":
        from mmsr_bench.data import synth

        cfg_kwargs = {}
        if spec.synth_users:
            cfg_kwargs["n_users"] = spec.synth_users
        if spec.synth_items:
            cfg_kwargs["n_items"] = spec.synth_items
        return synth.generate(spec.category or spec.name, spec.seed, out_dir / "images", synth.SynthConfig(**cfg_kwargs))
    if spec.source == "sequence":
        root = loaders.find_data_root()
        if root is None or not (root / spec.path).exists():
            raise DataError(missing_data_message(suite, spec))
        items = root / spec.items if spec.items else None
        users = root / spec.users if spec.users else None
        raw = loaders.load_sequence_file(root / spec.path, items_tsv=items, users_tsv=users, name=spec.name)
        if spec.item_text:
            raw = join_item_text(raw, root / spec.item_text, spec)
        return enrich_with_meta(raw, suite, spec) if spec.meta else raw
    if spec.source == "amazon2014":
        cat = _amazon_category(spec)
        reviews = raw_dir("amazon2014") / f"reviews_{cat}_5.json.gz"
        meta = raw_dir("amazon2014") / f"meta_{cat}.json.gz"
        if not reviews.exists():
            raise DataError(missing_data_message(suite, spec))
        return loaders.load_amazon_2014(reviews, meta if meta.exists() else None, name=spec.name)
    cat = _amazon_category(spec)
    reviews = raw_dir("amazon2023") / f"{cat}.jsonl"
    meta = raw_dir("amazon2023") / f"meta_{cat}.jsonl"
    if not reviews.exists():
        raise DataError(missing_data_message(suite, spec))
    return loaders.load_amazon_2023(reviews, meta if meta.exists() else None, name=spec.name)


def join_item_text(raw: RawDataset, path: Path, spec: DatasetSpec) -> RawDataset:
    """Make an item-text file's text (e.g. Sports' derived descriptors) every item's ``title``, joined by item id.

    All titles are replaced, never mixed with others, so a run's recorded ``item_text_source`` describes every
    item. Where both files carry an ASIN they must agree (a wrong pairing would silently attach another item's
    text). Items without a row get no title, with a warning.
    """
    from mmsr_bench.data import loaders

    text = loaders.read_item_text_tsv(path)
    items = raw.items.copy()
    if "asin" in items.columns:
        mine = items["asin"].reindex(text.index)
        clash = mine.notna() & text["asin"].notna() & (mine != text["asin"])
        if clash.any():
            ext = clash[clash].index[0]
            raise DataError(f"{path} line {int(text.loc[ext, 'line'])}: item {ext} has asin {text.loc[ext, 'asin']!r} "
                            f"but dataset {spec.name!r}'s item table says {mine[ext]!r}; use the item text file that "
                            "belongs to this dataset")
    if "title" in items.columns and items["title"].notna().any():
        log.info("%s: %s replaces the item table's titles", spec.name, path)
    titles = text["text"].reindex(items.index)
    n_missing = int(titles.isna().sum())
    if n_missing:
        log.warning("%s: %d of %d items have no row in %s (e.g. %s); they have no title", spec.name, n_missing,
                    len(items), path, ", ".join(map(str, titles.index[titles.isna()][:5])))
    items["title"] = titles.astype(object).where(titles.notna(), None)
    return dataclasses.replace(raw, items=items, source=f"{raw.source} + {path} ({spec.item_text_kind})")


def enrich_with_meta(raw: RawDataset, suite: SuiteSpec, spec: DatasetSpec) -> RawDataset:
    """Fill missing item fields (title, brand, categories, description, image URL) from an imported raw Amazon
    meta file, joined by ASIN. Existing values are kept."""
    from mmsr_bench.data import loaders

    path = raw_dir("amazon2014") / spec.meta
    if not path.exists():
        raise DataError(
            f"dataset {spec.name!r} of suite {suite.name!r} joins {spec.meta} (Amazon Reviews 2014 metadata with "
            f"titles and image URLs), which is not imported: download it and run `bench data import {suite.name} "
            f"--from DIR` (copies it into {raw_dir('amazon2014')})")
    items = raw.items.copy()
    if "asin" not in items.columns:
        raise DataError(f"dataset {spec.name!r}: its item table has no asin column to join {spec.meta} on")
    meta = loaders.read_meta(path, set(items["asin"].dropna().astype(str)))
    for col in ("title", "brand", "categories", "description", "image"):
        if col not in items.columns:
            items[col] = None
        fill = items["asin"].map(meta[col]) if col in meta.columns else None
        if fill is not None:
            empty = items[col].isna() | (items[col].astype(str) == "")
            items.loc[empty, col] = fill[empty]
    return dataclasses.replace(raw, items=items, source=f"{raw.source} + {path}")


# ------------------------------------------------------------------------------------------------ preprocessing
def preprocess(raw: RawDataset, suite: SuiteSpec) -> tuple[list[str], list[list[str]], list[str]]:
    """Apply the suite's rating threshold, duplicate rule and iterated k-core. Returns (user ids, sequences,
    a report of counts after each step)."""
    pp = suite.preprocess
    users, seqs = list(raw.user_ids), [list(s) for s in raw.sequences]
    report = [_counts("loaded", seqs)]
    if pp.min_rating is not None:
        if raw.ratings is None:
            report.append(f"min_rating={pp.min_rating}: not applicable (the source has no ratings)")
        else:
            seqs = [[i for i, r in zip(s, rs) if r >= pp.min_rating] for s, rs in zip(seqs, raw.ratings)]
            report.append(_counts(f"rating >= {pp.min_rating}", seqs))
    if pp.duplicates == "drop":
        seqs = [list(dict.fromkeys(s)) for s in seqs]
        report.append(_counts("duplicates dropped (first kept)", seqs))
    elif pp.duplicates == "drop_consecutive":
        seqs = [[x for j, x in enumerate(s) if j == 0 or s[j - 1] != x] for s in seqs]
        report.append(_counts("consecutive duplicates dropped", seqs))
    k = pp.kcore
    if k > 0:
        rounds = 0
        while True:
            rounds += 1
            item_count = Counter(i for s in seqs for i in s)
            new = [[i for i in s if item_count[i] >= k] for s in seqs]
            keep = [len(s) >= k for s in new]
            new_users = [u for u, kp in zip(users, keep) if kp]
            new = [s for s, kp in zip(new, keep) if kp]
            changed = sum(map(len, new)) != sum(map(len, seqs)) or len(new) != len(seqs)
            users, seqs = new_users, new
            if not changed:
                break
        report.append(_counts(f"{k}-core ({rounds} rounds)", seqs))
    short = [len(s) < 3 for s in seqs]
    if any(short):
        users = [u for u, sh in zip(users, short) if not sh]
        seqs = [s for s, sh in zip(seqs, short) if not sh]
        report.append(_counts("users with < 3 interactions dropped (leave-one-out needs 3)", seqs))
    if not seqs:
        raise DataError(f"dataset {raw.name!r}: no users left after preprocessing ({'; '.join(report)})")
    for line in report:
        log.info("%s: %s", raw.name, line)
    return users, seqs, report


def _counts(step: str, seqs: list[list[str]]) -> str:
    n_items = len({i for s in seqs for i in s})
    return f"{step}: {len(seqs)} users, {n_items} items, {sum(map(len, seqs))} interactions"


def _item_order(ext_ids: set[str]) -> list[str]:
    if all(x.isdigit() for x in ext_ids):
        return sorted(ext_ids, key=int)
    return sorted(ext_ids)


# ------------------------------------------------------------------------------------------------- candidates
def _user_rng(suite: SuiteSpec, dataset: str, user: str, split: str) -> np.random.Generator:
    """Seeded per protocol seed, dataset, user and split (not the suite name), so a user's candidates never change
    when others do, and a sampled suite (amazon4-lite, synth4-lite) gives each user its full suite's candidates."""
    parts = [suite.protocol.seed, zlib.crc32(dataset.encode()), zlib.crc32(user.encode()), zlib.crc32(split.encode())]
    return np.random.default_rng(parts)


def sample_negatives(rng: np.random.Generator, n_items: int, seen: set[int], n_neg: int,
                     probs: np.ndarray | None = None) -> np.ndarray:
    """``n_neg`` distinct items from 1..n_items outside ``seen``: uniform, or proportional to ``probs``."""
    available = n_items - len(seen)
    if available < n_neg:
        raise DataError(f"cannot sample {n_neg} negatives: only {available} items are unseen by a user")
    out: list[int] = []
    chosen: set[int] = set()
    while len(out) < n_neg:
        draw = 2 * (n_neg - len(out)) + 8
        if probs is None:
            cand = rng.integers(1, n_items + 1, size=draw)
        else:
            cand = rng.choice(n_items, size=draw, p=probs) + 1
        for c in cand.tolist():
            if c not in seen and c not in chosen:
                chosen.add(c)
                out.append(c)
                if len(out) == n_neg:
                    break
    return np.asarray(out, dtype=np.int32)


# ------------------------------------------------------------------------------------------------ materialize
def dataset_dir(suite: SuiteSpec, dataset: str) -> Path:
    return cache_dir("suites", suite.name, dataset)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pixel_sha256(path: Path) -> str:
    """Hash of decoded pixels (mode, size, bytes): stable across PNG encoders, unlike the file bytes."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            return hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # UnidentifiedImageError is an OSError
        raise HashMismatch(f"image {path} cannot be decoded ({type(exc).__name__}: {exc}); rebuild the dataset "
                           "with `bench suite build NAME --force`") from None


def _clean(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        value = " > ".join(str(v) for v in value)
    return " ".join(str(value).split())  # no tabs or newlines inside a field


def expected_files(suite: SuiteSpec, out_dir: Path | None = None) -> list[str]:
    files = list(HASHED_FILES)
    if suite.protocol.candidates != "full":
        files += ["candidates_valid.npy", "candidates_test.npy"]
    if out_dir is not None and (out_dir / "images.tsv").exists():
        files.append("images.tsv")
    return files


def materialize(suite: SuiteSpec, spec: DatasetSpec, force: bool = False) -> dict[str, str]:
    """Build one dataset's artifacts (if absent or ``force``) and return their sha256 by file name.

    Safe under concurrency: builders of one dataset take a file lock, the build is written to a temporary folder
    and renamed into place when complete, and a process that waited for the lock reuses the build it finds."""
    from filelock import FileLock

    out = dataset_dir(suite, spec.name)
    done = out / "build.json"
    if done.exists() and not force:
        return {f: sha256_file(out / f) for f in expected_files(suite, out)}
    started = time.time()
    with FileLock(str(out.parent / f".{spec.name}.lock")):
        if done.exists() and (not force or done.stat().st_mtime >= started):
            log.info("%s/%s was built by another process while this one waited; reusing it", suite.name, spec.name)
            return {f: sha256_file(out / f) for f in expected_files(suite, out)}
        try:
            return _materialize_locked(suite, spec, out)
        except BaseException:  # a failed or interrupted build (Ctrl-C, SIGTERM) leaves no half-built folder behind
            shutil.rmtree(out.parent / f".{spec.name}.building", ignore_errors=True)
            raise


def _materialize_locked(suite: SuiteSpec, spec: DatasetSpec, out: Path) -> dict[str, str]:
    root = bench_home()
    tmp = inside(out.parent / f".{spec.name}.building", root, f"build folder of {suite.name}/{spec.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    raw = load_source(suite, spec, tmp)
    users, seqs, report = preprocess(raw, suite)
    order = _item_order({i for s in seqs for i in s})
    index = {ext: k + 1 for k, ext in enumerate(order)}
    n_items = len(order)
    int_seqs = [np.asarray([index[i] for i in s], dtype=np.int64) for s in seqs]

    with open(tmp / "sequences.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("user\text_user\titems\n")
        for u, (ext_u, s) in enumerate(zip(users, int_seqs)):
            f.write(f"{u}\t{_clean(ext_u)}\t{' '.join(map(str, s.tolist()))}\n")

    items = raw.items
    manifest = []
    with open(tmp / "items.tsv", "w", encoding="utf-8", newline="\n") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(ITEM_FILE_COLUMNS)
        for ext in order:
            row = items.loc[ext] if ext in items.index else None
            vals = {c: _clean(row[c]) if row is not None and c in row.index else "" for c in ITEM_FILE_COLUMNS[2:]}
            img = vals["image"]
            if img and not img.startswith(("http://", "https://")):
                p = Path(img)
                if p.is_absolute() and tmp in p.parents:
                    rel = p.relative_to(tmp).as_posix()
                    vals["image"] = rel
                    manifest.append((index[ext], rel, pixel_sha256(p)))
            w.writerow([index[ext], ext, *[vals[c] for c in ITEM_FILE_COLUMNS[2:]]])
    if manifest:
        with open(tmp / "images.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("item\tpath\tpixel_sha256\n")
            for item, rel, digest in manifest:
                f.write(f"{item}\t{rel}\t{digest}\n")

    n_users = len(int_seqs)
    eval_users = np.arange(n_users, dtype=np.int64)
    if suite.protocol.max_eval_users and suite.protocol.max_eval_users < n_users:
        rng = np.random.default_rng([suite.protocol.seed, zlib.crc32(spec.name.encode()), 7])
        eval_users = np.sort(rng.choice(n_users, size=suite.protocol.max_eval_users, replace=False)).astype(np.int64)
    targets = np.asarray([[int_seqs[u][-2], int_seqs[u][-1]] for u in eval_users], dtype=np.int64)
    np.save(tmp / "eval_users.npy", eval_users)
    np.save(tmp / "targets.npy", targets)

    if suite.protocol.candidates != "full":
        probs = None
        if suite.protocol.candidates == "popularity":
            pop = np.bincount(np.concatenate([s[:-2] for s in int_seqs]), minlength=n_items + 1)[1:].astype(float)
            pop += 1.0  # every item stays reachable
            probs = pop / pop.sum()
        for col, split in ((0, "valid"), (1, "test")):
            cands = np.empty((len(eval_users), 1 + suite.protocol.n_negatives), dtype=np.int32)
            for row, u in enumerate(eval_users):
                rng = _user_rng(suite, spec.name, users[u], split)
                cands[row, 0] = targets[row, col]
                cands[row, 1:] = sample_negatives(rng, n_items, set(int_seqs[u].tolist()), suite.protocol.n_negatives,
                                                  probs)
            np.save(tmp / f"candidates_{split}.npy", cands)

    hashes = {f: sha256_file(tmp / f) for f in expected_files(suite, tmp)}
    dq = quality.check(spec.name, seqs, int_seqs, eval_users)
    for line in dq.warnings:
        log.warning("%s", line)
    (tmp / "build.json").write_text(json.dumps({"report": report, "hashes": hashes, "n_users": n_users,
                                                "n_items": n_items, "source": raw.source,
                                                "quality": dq.as_dict(),
                                                "spec": suite.build_spec(spec.name)}, indent=2, default=list))
    out = inside(out, root, f"dataset folder of {suite.name}/{spec.name}")
    if out.exists():
        old = out.parent / f".{spec.name}.old"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)  # readers see either the old build or the new one, never a half-deleted folder
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return hashes


def check_build_spec(suite: SuiteSpec, dataset: str, record_path: Path) -> None:
    """Refuse artifacts built from other spec values than the suite file holds now, naming each changed field."""
    rebuild = f"rebuild with `bench suite build {suite.name} --dataset {dataset} --force`"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HashMismatch(f"{record_path}: unreadable build record ({exc}); {rebuild}") from None
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise HashMismatch(f"{record_path} does not record the spec it was built from (an older build); {rebuild}")
    drift = suite.build_spec_drift(dataset, record["spec"])
    if drift:
        raise HashMismatch(f"{record_path}: suite {suite.name!r} ({suite.path}) changed since dataset {dataset!r} was "
                           f"built: {'; '.join(drift)}. The artifacts are the old spec's; {rebuild}, then re-freeze "
                           f"(`bench suite freeze {suite_ref(suite)} --dataset {dataset}`) if the change is intended")


def verify(suite: SuiteSpec, dataset: str, *, allow_unfrozen: bool = False, check_images: bool = True) -> dict[str, str]:
    """Re-hash a dataset's artifacts against the spec; raise :class:`HashMismatch` naming the first bad file."""
    out = dataset_dir(suite, dataset)
    frozen = suite.hashes.get(dataset)
    if not (out / "build.json").exists():
        raise HashMismatch(f"suite {suite.name!r} dataset {dataset!r} is not built: run `bench suite build {suite.name}`")
    check_build_spec(suite, dataset, out / "build.json")
    if not frozen and not allow_unfrozen:
        raise HashMismatch(
            f"dataset {dataset!r} of suite {suite.name!r} has no frozen hashes in {suite.path}: run "
            f"`bench suite freeze {suite_ref(suite)} --dataset {dataset}` and review the diff before running on it")
    actual = {}
    for name in expected_files(suite, out):
        path = out / name
        if not path.exists():
            raise HashMismatch(f"{path} is missing: rebuild with `bench suite build {suite_ref(suite)} --force`")
        actual[name] = sha256_file(path)
        if frozen is not None and frozen.get(name) != actual[name]:
            raise HashMismatch(
                f"{path} does not match suite {suite.name!r}: sha256 {actual[name][:16]}... but the spec "
                f"({suite.path}) freezes {str(frozen.get(name))[:16]}...; rebuild with "
                f"`bench suite build {suite_ref(suite)} --force`, or re-freeze if the change is intended")
    if frozen:
        extra = set(frozen) - set(actual)
        if extra:
            raise HashMismatch(f"{out}: artifacts {sorted(extra)} frozen in {suite.path} were not built")
    if check_images and (out / "images.tsv").exists():
        manifest = pd.read_csv(out / "images.tsv", sep="\t", dtype=str, keep_default_na=False)
        for _, row in manifest.iterrows():
            p = out / row["path"]
            if not p.exists() or pixel_sha256(p) != row["pixel_sha256"]:
                raise HashMismatch(f"image {p} is missing or differs from {out / 'images.tsv'}")
    return actual


# ------------------------------------------------------------------------------------------------------- load
@dataclass(frozen=True)
class SuiteData:
    """One dataset of a suite, verified and ready for a run."""

    suite: SuiteSpec
    dataset: str
    train: TrainData
    valid: EvalSplit
    test: EvalSplit
    items: ItemTable
    fingerprint: str
    eval_users_hash: str
    directory: Path
    #: Data-quality warnings recorded at build time (:mod:`mmsr_bench.data.quality`); every run stores them.
    quality_warnings: tuple[str, ...] = ()


def item_text_source(data: SuiteData) -> str:
    """What the dataset's item text is (``titles``, ``derived-descriptors (...)`` or ``none``), stored with every
    run so that numbers on derived text are never read as numbers on raw titles."""
    return data.suite.dataset(data.dataset).item_text_source(data.items.has("title"))


def read_sequences(path: Path) -> tuple[list[str], list[np.ndarray]]:
    users, seqs = [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        if header.rstrip("\n") != "user\text_user\titems":
            raise DataError(f"{path}: line 1: unexpected header {header.strip()!r}")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise DataError(f"{path}: line {lineno}: expected 3 tab-separated fields")
            users.append(parts[1])
            seqs.append(np.asarray(parts[2].split(), dtype=np.int64))
    return users, seqs


def read_items(path: Path, base: Path) -> ItemTable:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)
    frame["item"] = frame["item"].astype(np.int64)
    frame = frame.set_index("item", drop=False)
    local = (frame["image"] != "") & ~frame["image"].str.startswith(("http://", "https://"))
    frame.loc[local, "image"] = [str(base / p) for p in frame.loc[local, "image"]]
    frame = frame.replace({"": None})
    return ItemTable(frame, image_roots=(base, *configured_image_roots()))


def load(suite: SuiteSpec, dataset: str, *, build: bool = True, allow_unfrozen: bool = False) -> SuiteData:
    """Materialize if needed, verify every artifact against the spec, then load splits and candidates."""
    spec = suite.dataset(dataset)
    out = dataset_dir(suite, dataset)
    if not (out / "build.json").exists():
        if not build:
            raise BenchError(f"suite {suite.name!r} dataset {dataset!r} is not built: run `bench suite build {suite.name}`")
        materialize(suite, spec)
    actual = verify(suite, dataset, allow_unfrozen=allow_unfrozen)
    users, seqs = read_sequences(out / "sequences.tsv")
    items = read_items(out / "items.tsv", out)
    n_items = items.n_items
    eval_users = np.load(out / "eval_users.npy", allow_pickle=False)
    targets = np.load(out / "targets.npy", allow_pickle=False)
    # Copies, not views: a slice's ``.base`` is the whole sequence, validation and test targets included, and
    # fit must not be able to reach them (the conformance kit's no_test_leak check catches such a leak).
    train = TrainData(dataset, n_items, users, [s[:-2].copy() for s in seqs], items, seed=suite.protocol.seed)
    full = suite.protocol.candidates == "full"
    splits = {}
    for col, name, cut in ((0, "valid", -2), (1, "test", -1)):
        hist = [seqs[u][:cut].copy() for u in eval_users]
        cands = None if full else np.load(out / f"candidates_{name}.npy", allow_pickle=False).astype(np.int64)
        exclude = None
        if full:
            exclude = [h[h != t] for h, t in zip(hist, targets[:, col])]
        splits[name] = EvalSplit(name, eval_users, hist, targets[:, col], cands, n_items, exclude)
    _read_only(train.sequences, *(a for sp in splits.values() for a in (sp.users, sp.targets, sp.candidates)),
               *(h for sp in splits.values() for h in sp.histories + (sp.exclude or [])))
    record = json.loads((out / "build.json").read_text(encoding="utf-8"))
    warnings = tuple(str(w) for w in (record.get("quality") or {}).get("warnings", []))
    return SuiteData(suite, dataset, train, splits["valid"], splits["test"], items,
                     suite.protocol_fingerprint(dataset, actual), sha256_file(out / "eval_users.npy"), out,
                     quality_warnings=warnings)


def _read_only(*arrays) -> None:
    """Mark the loaded arrays read-only: one load serves every seed of a run (and the harness's own metric
    computation), so an adapter that wrote into the shared candidates or sequences in place would corrupt the next
    seed's numbers; now such a write fails at once, naming the adapter."""
    for a in arrays:
        for arr in (a if isinstance(a, list) else [a]):
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False

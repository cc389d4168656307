"""Where local artifacts live: the cache home (suites, features, backbones, checkpoints) and the results store."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITES_DIR = REPO_ROOT / "suites"


def bench_home() -> Path:
    """``$MMSR_BENCH_HOME`` or ``~/.cache/mmsr-bench``; created on first use."""
    home = Path(os.environ.get("MMSR_BENCH_HOME") or Path.home() / ".cache" / "mmsr-bench").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache home, e.g. ``cache_dir("features", "synth4")``; created on first use."""
    path = bench_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_url() -> str:
    """``$MMSR_BENCH_DB`` or ``sqlite:///results.db`` in the current directory."""
    return os.environ.get("MMSR_BENCH_DB") or "sqlite:///results.db"


def auto_device(requested: str | None = None) -> str:
    """CUDA where present, else CPU; ``requested`` (or ``$MMSR_BENCH_DEVICE``) overrides."""
    requested = requested or os.environ.get("MMSR_BENCH_DEVICE")
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

"""Where local artifacts live: the cache home (suites, features, backbones, checkpoints) and the results store."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mmsr_bench.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout (git version, scaffolding); not needed installed
SUITES_DIR = Path(__file__).resolve().parent / "suites" / "specs"  # package data: a non-editable install has them


def bench_home() -> Path:
    """``$MMSR_BENCH_HOME`` or ``~/.cache/mmsr-bench``; created on first use."""
    home = Path(os.environ.get("MMSR_BENCH_HOME") or Path.home() / ".cache" / "mmsr-bench").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BenchError(f"$MMSR_BENCH_HOME {str(home)[:200]} is a file, not a folder; point it at a folder") from None
    except OSError as exc:
        raise BenchError(f"$MMSR_BENCH_HOME {str(home)[:200]}: cannot create it ({exc.strerror})") from None
    return home


#: A name the harness turns into one path component (suite and dataset names, cache keys): letters, digits, "_",
#: "-" and inner dots, never "." or "..", no separator, at most 100 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def check_safe_name(value: str, what: str) -> str:
    """``value`` if it is one safe path component (:data:`SAFE_NAME`, no ``..``), else a BenchError naming ``what``."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        raise BenchError(f"{what} {value!r} is not a safe name: use letters, digits, '_', '-' and single inner dots "
                         "(at most 100 characters, no path separators)")
    return value


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with symlinks and ``..`` resolved, is ``root`` or lies below it."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    return resolved == base or base in resolved.parents


def inside(path: Path, root: Path, what: str) -> Path:
    """``path`` resolved, if it lies inside ``root`` (resolved); else a BenchError naming ``what``. Every path the
    harness writes or deletes goes through this, so no name from a loaded file can reach outside its root."""
    if not is_inside(path, root):
        raise BenchError(f"{what}: {path} resolves outside {Path(root).resolve()}; refusing to touch it")
    return Path(path).resolve()


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache home, e.g. ``cache_dir("features", "synth4")``; created on first use. Each part is
    one safe path component, and the result is checked to lie inside the cache home."""
    for part in parts:
        check_safe_name(part, "cache folder name")
    home = bench_home()
    path = inside(home.joinpath(*parts), home, "cache folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def configured_image_roots() -> tuple[Path, ...]:
    """Extra folders a dataset's local image paths may point into: ``$MMSR_BENCH_IMAGE_ROOT`` (``os.pathsep``
    separated). By default a dataset's images must lie inside its own built folder."""
    raw = os.environ.get("MMSR_BENCH_IMAGE_ROOT", "")
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())


def read_verified_json(path: Path) -> dict:
    """A JSON cache written by :func:`write_verified_json`: its entries if the recorded sha256 matches, else ``{}``
    with a warning naming the file (a tampered, truncated or older-format cache is recomputed, never used)."""
    import hashlib
    import json
    import logging

    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["entries"]
        ok = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest() == data["sha256"]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        ok, entries = False, {}
    if not ok or not isinstance(entries, dict):
        logging.getLogger(__name__).warning("cache %s does not match its recorded sha256 (tampered, truncated or "
                                            "an older format); recomputing its entries", path)
        return {}
    return entries


def write_verified_json(path: Path, entries: dict) -> None:
    """Write ``entries`` with the sha256 of their canonical JSON, atomically (temporary file + rename)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"sha256": digest, "entries": entries}, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def default_db_url() -> str:
    """``$MMSR_BENCH_DB`` or ``sqlite:///results.db`` in the current directory."""
    return os.environ.get("MMSR_BENCH_DB") or "sqlite:///results.db"


def check_device(requested: str | None) -> None:
    """Refuse a device string torch would not accept, or a CUDA/MPS device this machine lacks, before any work."""
    if requested is not None and not requested.strip():
        raise BenchError("--device '': give cpu, cuda, cuda:N or mps, or leave the option out")
    requested = requested or os.environ.get("MMSR_BENCH_DEVICE")
    if not requested:
        return
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", requested.strip())
    if not m:
        raise BenchError(f"--device {requested!r}: expected cpu, cuda, cuda:N or mps")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"--device {requested}: no CUDA device is available here (torch.cuda.is_available() "
                             "is False); use --device cpu")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise BenchError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif not torch.backends.mps.is_available():
        raise BenchError(f"--device {requested}: MPS is not available here; use --device cpu")


def auto_device(requested: str | None = None) -> str:
    """CUDA where present, else CPU; ``requested`` (or ``$MMSR_BENCH_DEVICE``) overrides."""
    requested = requested or os.environ.get("MMSR_BENCH_DEVICE")
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

"""Completed fine-tuning fits as portable files, so that the shards of one LLM cell can be scored on several
machines with one fit (``bench fits export`` / ``bench fits import``).

A fit is what ``finetune.sft_train`` leaves in ``$MMSR_BENCH_HOME/checkpoints/MODEL/NAME/``: ``fitted.safetensors``
(the trainable weights: LoRA adapters, a few MB) and ``fitted.json`` (the fingerprint of the settings, examples,
configuration and validation data it was trained on, and its validation curve). The files are data only
(safetensors and JSON: nothing in them is executed), and a fit is used only when its fingerprint matches the run
asking for it, so a fit from another machine can never stand in for another configuration.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.backbones import file_sha256
from mmsr_bench.paths import bench_home, cache_dir, check_safe_name

FILES = ("fitted.json", "fitted.safetensors")
MAX_BYTES = 2 * 2 ** 30  # a LoRA fit of a 7B model is well under this; anything larger is not a fit


@dataclass(frozen=True)
class FitReport:
    fits: int
    written: int
    unchanged: int
    bytes_written: int


def _fits_under(root: Path) -> list[Path]:
    """Folders ``MODEL/NAME`` under ``root`` holding both fit files."""
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/*/fitted.json") if (p.parent / "fitted.safetensors").is_file())


def _checked(folder: Path, where: str) -> tuple[str, str]:
    """(model, name) of a fit folder whose files are regular, bounded, parseable and consistent; else one error."""
    model, name = folder.parent.name, folder.name
    check_safe_name(model, f"{where}: model folder")
    check_safe_name(name, f"{where}: fit folder")
    for f in FILES:
        path = folder / f
        if path.is_symlink() or not path.is_file():
            raise BenchError(f"{where}: {path} is not a regular file")
        if path.stat().st_size > MAX_BYTES:
            raise BenchError(f"{where}: {path} is larger than {MAX_BYTES // 2 ** 30} GiB; not a fit")
    try:
        record = json.loads((folder / "fitted.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BenchError(f"{where}: {folder / 'fitted.json'} is not JSON ({exc})") from None
    result = record.get("result") if isinstance(record, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str) or not isinstance(result, dict):
        raise BenchError(f"{where}: {folder / 'fitted.json'} lacks the fields fingerprint and result")
    digest = file_sha256(folder / "fitted.safetensors")
    if result.get("fitted_sha256") not in (None, digest):
        raise BenchError(f"{where}: {folder / 'fitted.safetensors'} does not have the sha256 its fitted.json "
                         f"records (field result.fitted_sha256)")
    try:
        from safetensors import safe_open

        with safe_open(str(folder / "fitted.safetensors"), framework="pt") as fh:
            list(fh.keys())
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted bytes is one error line
        raise BenchError(f"{where}: {folder / 'fitted.safetensors'} is not a safetensors file ({exc})") from None
    return model, name


def _copy(src: Path, dst: Path) -> tuple[int, int]:
    """(written, bytes) copying a fit folder's files, leaving identical ones untouched."""
    written = nbytes = 0
    dst.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        a, b = src / f, dst / f
        if b.is_file() and b.read_bytes() == a.read_bytes():
            continue
        tmp = b.with_name(b.name + ".tmp")
        shutil.copyfile(a, tmp)
        tmp.replace(b)
        written += 1
        nbytes += a.stat().st_size
    return written, nbytes


def export_fits(to: Path, *, model: str | None = None, dataset: str | None = None) -> FitReport:
    """Copy the completed fits of this cache (optionally one model's, or one dataset's) to ``to/MODEL/NAME/``."""
    fits = [f for f in _fits_under(bench_home() / "checkpoints")
            if (model is None or f.parent.name == model) and (dataset is None or f.name.startswith(f"{dataset}-"))]
    if not fits:
        raise BenchError(f"no completed fit in {bench_home() / 'checkpoints'} matches --model/--dataset; nothing "
                         "exported (fits are kept by fine-tuned LLM adapters: tallrec, mllm-srec-*)")
    written = unchanged = nbytes = 0
    for folder in fits:
        m, n = _checked(folder, "export")
        w, b = _copy(folder, Path(to) / m / n)
        written, unchanged, nbytes = written + w, unchanged + len(FILES) - w, nbytes + b
    return FitReport(len(fits), written, unchanged, nbytes)


def import_fits(source: Path) -> FitReport:
    """Validate every fit folder under ``source`` (all before any is copied), then copy them into the cache."""
    fits = _fits_under(Path(source))
    if not fits:
        raise BenchError(f"{source}: no fit folders (MODEL/NAME/fitted.json + fitted.safetensors) found")
    checked = [(_checked(f, str(source)), f) for f in fits]
    written = unchanged = nbytes = 0
    for (m, n), folder in checked:
        w, b = _copy(folder, cache_dir("checkpoints", m, n))
        written, unchanged, nbytes = written + w, unchanged + len(FILES) - w, nbytes + b
    return FitReport(len(fits), written, unchanged, nbytes)

"""Download raw data files (``bench data fetch``): resumable, size-bounded, checked.

A file is fetched into a ``.part`` file beside its destination and resumed with an HTTP ``Range`` request when a
previous try was cut; a finished gzip file must decompress to the end (a truncated or damaged download is refused,
never imported). The first complete download of a name records its sha256 and size in ``fetched.json`` of the
destination folder (a verified JSON record); every later fetch of that name must match it, so a server that starts
serving other bytes is refused, naming the file. Hosts on loopback, link-local and private addresses are refused
unless ``$MMSR_BENCH_ALLOW_PRIVATE_HOSTS=1`` (the images' guard, :func:`mmsr_bench.data.images.check_public_host`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mmsr_bench.errors import BenchError
from mmsr_bench.paths import inside, read_verified_json, write_verified_json

log = logging.getLogger(__name__)

#: Where the Amazon Reviews 2014 per-category files are published (McAuley et al.; ``reviews_<Category>_5.json.gz``
#: and ``meta_<Category>.json.gz``); ``--base-url`` or ``$MMSR_BENCH_AMAZON2014_URL`` points elsewhere (a mirror).
AMAZON_2014_URL = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
RECORD = "fetched.json"
CHUNK = 256 << 10  # written as it arrives: a cut loses at most one chunk, the rest is resumed
#: The largest file fetched (the biggest 2014 meta file of the four categories is well under this).
MAX_BYTES = 8 << 30


@dataclass(frozen=True)
class Fetched:
    name: str
    path: Path
    bytes: int
    sha256: str
    resumed_from: int  # bytes already there from a cut download (0: fetched whole)
    skipped: bool  # already complete and matching its record: nothing downloaded


def _allow_private() -> bool:
    return "1" in (os.environ.get("MMSR_BENCH_ALLOW_PRIVATE_HOSTS", ""),
                   os.environ.get("MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS", ""))


def _check_host(url: str) -> None:
    from mmsr_bench.data.images import ImagePolicy, ImageRejected, _NetworkDown, check_public_host

    if not url.lower().startswith(("http://", "https://")):
        raise BenchError(f"{url}: only http(s) URLs can be fetched")
    try:
        check_public_host(url, ImagePolicy(allow_private_hosts=_allow_private()))
    except ImageRejected as exc:
        raise BenchError(f"{url}: {exc.detail or exc.reason}".replace("MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS",
                                                                     "MMSR_BENCH_ALLOW_PRIVATE_HOSTS")) from None
    except _NetworkDown as exc:
        raise BenchError(f"{url}: {exc}; no network?") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_gzip(path: Path, name: str) -> None:
    """A .gz file must decompress to its end: a cut or damaged download is refused here."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise BenchError(f"{name}: the download is not a complete gzip file ({exc}); fetch it again") from None


def fetch_file(url: str, folder: Path, name: str, *, timeout_s: float = 30.0,
               progress: Callable[[int, int | None], None] | None = None) -> Fetched:
    """Fetch ``url`` into ``folder/name``, resuming a cut download, checking it (gzip, size, the recorded sha256)
    and recording its sha256 the first time. Raises BenchError naming the file on any failure."""
    import requests

    folder = Path(folder)
    dest = inside(folder / name, folder, f"file {name}")
    part = dest.with_name(dest.name + ".part")
    record = read_verified_json(folder / RECORD)
    known = record.get(name)
    if dest.is_file():
        digest = _sha256(dest)
        if known and known.get("sha256") != digest:
            raise BenchError(f"{dest}: its sha256 {digest[:12]}… differs from the one recorded at its first download "
                             f"({known['sha256'][:12]}…); the file changed or is damaged. Delete it to fetch it again")
        if not known:
            _record(folder, record, name, url, dest, digest)
        return Fetched(name, dest, dest.stat().st_size, digest, 0, True)
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "mmsr-bench/0.1 (+data fetch)"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        with _get(url, headers, timeout_s) as resp:
            if start and resp.status_code == 200:  # the server ignored the range: start over
                start = 0
            elif resp.status_code not in (200, 206):
                raise BenchError(f"{url}: HTTP {resp.status_code}")
            length = resp.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_BYTES:
                raise BenchError(f"{url}: {total:,} bytes, more than the {MAX_BYTES:,} a data file may have")
            done = start
            with open(part, "ab" if start else "wb") as out:
                for block in resp.iter_content(chunk_size=CHUNK):
                    done += len(block)
                    if done > MAX_BYTES:
                        raise BenchError(f"{url}: more than {MAX_BYTES:,} bytes")
                    out.write(block)
                    if progress:
                        progress(done, total)
            if total is not None and done < total:
                raise BenchError(f"{url}: the connection ended after {done:,} of {total:,} bytes; run the command "
                                 "again to resume")
    except requests.RequestException as exc:
        got = part.stat().st_size if part.is_file() else 0
        raise BenchError(f"{url}: {type(exc).__name__} after {got:,} bytes ({str(exc)[:200]}); run the command again "
                         "to resume") from None
    if name.endswith(".gz"):
        try:
            _check_gzip(part, name)
        except BenchError:
            part.unlink(missing_ok=True)  # a complete but damaged file cannot be resumed into a good one
            raise
    digest = _sha256(part)
    if known and known.get("sha256") != digest:
        part.unlink(missing_ok=True)
        raise BenchError(f"{url}: the downloaded {name} has sha256 {digest[:12]}…, not the {known['sha256'][:12]}… "
                         "recorded at its first download; refused (the server now serves other bytes)")
    os.replace(part, dest)
    if not known:
        _record(folder, record, name, url, dest, digest)
    return Fetched(name, dest, dest.stat().st_size, digest, start, False)


def _get(url: str, headers: dict, timeout_s: float, max_redirects: int = 5):
    """A streaming GET that follows at most ``max_redirects`` redirects by hand, each hop's host checked."""
    import requests
    from urllib.parse import urljoin

    for _ in range(max_redirects + 1):
        _check_host(url)
        resp = requests.get(url, stream=True, timeout=(timeout_s, timeout_s), headers=headers, allow_redirects=False)
        if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
            url = urljoin(url, resp.headers["Location"])
            resp.close()
            continue
        return resp
    raise BenchError(f"{url}: more than {max_redirects} redirects")


def _record(folder: Path, record: dict, name: str, url: str, dest: Path, digest: str) -> None:
    record[name] = {"url": url, "sha256": digest, "bytes": dest.stat().st_size}
    write_verified_json(folder / RECORD, record)

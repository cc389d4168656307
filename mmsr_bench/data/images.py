"""Resolve item image references (local paths or http(s) URLs) to verified local image files.

Why this exists: image URLs in public item tables rot, point at HTML error pages, or serve huge or truncated
files, and a benchmark must never crash (or hang) on one bad item nor silently train on garbage. Every image a
model sees has been fetched once into the cache (``cache_dir("images", <dataset>)``), checked for content type and
size, ``verify()``-ed and fully decoded by Pillow with its decompression-bomb guard on. Failures are counted by
reason and reported once per dataset, never raised per item.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping

import pandas as pd
from PIL import Image, ImageFile

from mmsr_bench.paths import cache_dir, is_inside

log = logging.getLogger(__name__)

#: Reasons an image reference can fail; the keys of :attr:`ImageReport.failed`.
FAIL_REASONS = (
    "offline",  # a URL, network not allowed (or the network is unreachable) and not in the cache
    "http_error",  # non-200 status or a request error after the retries
    "content_type",  # the server did not answer with image/*
    "too_large",  # more bytes than ImagePolicy.max_bytes
    "too_many_pixels",  # width*height above ImagePolicy.max_pixels (decompression-bomb guard)
    "truncated",  # the file ends early
    "corrupt",  # Pillow cannot identify or decode it
    "not_found",  # a local path that does not exist
    "bad_reference",  # neither an http(s) URL nor a path (e.g. ftp://, data:)
    "outside_root",  # a local path outside the dataset's folder and the configured image roots (never read)
    "private_host",  # a URL (or a redirect) to a loopback, link-local, private or reserved address (never fetched)
)

_CONTENT_TYPE_EXT = {"image/jpeg": ".jpg", "image/jpg": ".jpg", "image/png": ".png", "image/gif": ".gif",
                     "image/webp": ".webp", "image/bmp": ".bmp", "image/tiff": ".tif"}


class ImageRejected(Exception):
    """One image failed a check; ``reason`` is one of :data:`FAIL_REASONS`. Internal: counted, not raised."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImagePolicy:
    """Limits for fetching and accepting an image. Defaults suit product photos (a few hundred KB)."""

    timeout_s: float = 10.0  # connect and read timeout per request
    retries: int = 2  # extra attempts after a timeout, connection error or 5xx
    backoff_s: float = 0.5  # sleep before retry i is backoff_s * 2**i
    max_bytes: int = 10_000_000
    max_pixels: int = 40_000_000  # Pillow's own default guard is ~89M; product photos need far less
    #: After this many consecutive connection failures (no answer at all), the network is taken as down and
    #: the remaining URLs are counted as "offline" instead of being tried one by one.
    max_consecutive_network_errors: int = 5
    user_agent: str = "mmsr-bench/0.1 (+image resolver)"
    #: Fetch from loopback, link-local, private and reserved addresses too (off: an item table must not make the
    #: harness probe the user's own network). ``$MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS=1`` turns it on.
    allow_private_hosts: bool = field(
        default_factory=lambda: os.environ.get("MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS", "") == "1")
    max_redirects: int = 5  # each hop is checked like the first URL


@dataclass(frozen=True)
class ImageReport:
    """Outcome of :func:`resolve_images`: a verified local path (or None) per item, and counts by reason."""

    dataset: str
    paths: dict[Hashable, Path | None]
    ok: int
    missing: int  # items with no image reference at all
    failed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # one "item: detail" per failure reason

    @property
    def n_items(self) -> int:
        return len(self.paths)

    @property
    def coverage(self) -> float:
        """Share of items with a verified image (0.0 for an empty table)."""
        return self.ok / self.n_items if self.n_items else 0.0

    @property
    def n_failed(self) -> int:
        return int(sum(self.failed.values()))

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary, suitable for run records and the CLI."""
        return {"dataset": self.dataset, "items": self.n_items, "ok": self.ok, "missing": self.missing,
                "failed": dict(self.failed), "coverage": round(self.coverage, 6)}


@contextlib.contextmanager
def _strict_pillow(max_pixels: int) -> Iterator[None]:
    """Pillow with the decompression-bomb guard at ``max_pixels`` (its warning turned into an error) and
    truncated files refused, restoring the global settings afterwards."""
    old_max, old_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_trunc


def verify_image(path: str | Path, policy: ImagePolicy = ImagePolicy()) -> tuple[int, int]:
    """Check a local image file; return (width, height) or raise :class:`ImageRejected`.

    Order: size on disk, header (pixel count against the bomb guard), ``verify()``, then a full decode from a
    fresh handle (``verify`` leaves the image unusable and does not catch every truncation).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageRejected("not_found", str(path))
    size = path.stat().st_size
    if size > policy.max_bytes:
        raise ImageRejected("too_large", f"{size} bytes > {policy.max_bytes}")
    with _strict_pillow(policy.max_pixels):
        try:
            with Image.open(path) as im:
                w, h = im.size
                if w * h > policy.max_pixels:
                    raise ImageRejected("too_many_pixels", f"{w}x{h} > {policy.max_pixels} pixels")
                im.verify()
            with Image.open(path) as im:
                im.load()
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("too_many_pixels", str(exc)) from None
        except OSError as exc:  # UnidentifiedImageError is an OSError too
            text = str(exc).lower()
            if "truncated" in text or "broken data stream" in text or "premature end" in text:
                raise ImageRejected("truncated", str(exc)) from None
            raise ImageRejected("corrupt", str(exc)) from None
        except (SyntaxError, ValueError, EOFError) as exc:  # some plugins signal bad data this way
            text = str(exc).lower()
            reason = "truncated" if "truncated" in text or isinstance(exc, EOFError) else "corrupt"
            raise ImageRejected(reason, str(exc)) from None
    return w, h


def check_public_host(url: str, policy: ImagePolicy) -> None:
    """Refuse a URL whose host is, or resolves to, a loopback, link-local, private, multicast or reserved address
    (raises :class:`ImageRejected` ``private_host``) unless the policy allows private hosts."""
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname
    if not host:
        raise ImageRejected("bad_reference", f"{url}: no host")
    if policy.allow_private_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise _NetworkDown(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast:
            raise ImageRejected("private_host", f"{host} resolves to {addr}; set "
                                "MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS=1 to fetch from your own network")


def _is_url(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:40]


def _cached(url: str, folder: Path) -> Path | None:
    """The cached file of a URL, whatever extension it was saved with."""
    matches = sorted(folder.glob(_url_key(url) + ".*"))
    return matches[0] if matches else None


class _NetworkDown(Exception):
    """No answer at all from the network (DNS failure, refused, timeout): counts toward the cut-off."""


def _get_checked(session: Any, url: str, policy: ImagePolicy) -> Any:
    """GET with redirects followed by hand (at most ``policy.max_redirects``), every hop's host checked by
    :func:`check_public_host` before it is contacted."""
    from urllib.parse import urljoin

    for _ in range(policy.max_redirects + 1):
        check_public_host(url, policy)
        resp = session.get(url, stream=True, timeout=(policy.timeout_s, policy.timeout_s),
                           headers={"User-Agent": policy.user_agent}, allow_redirects=False)
        if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
            nxt = urljoin(url, resp.headers["Location"])
            resp.close()
            if not _is_url(nxt):
                raise ImageRejected("bad_reference", f"redirect to {nxt}")
            url = nxt
            continue
        return resp
    raise ImageRejected("http_error", f"more than {policy.max_redirects} redirects")


def _download(url: str, folder: Path, policy: ImagePolicy, session: Any) -> Path:
    """Fetch one URL into ``folder`` (atomically), enforcing content type and size; verify before keeping it."""
    import requests

    last: Exception | None = None
    for attempt in range(policy.retries + 1):
        if attempt:
            time.sleep(policy.backoff_s * 2 ** (attempt - 1))
        try:
            with _get_checked(session, url, policy) as resp:
                if resp.status_code >= 500:
                    last = ImageRejected("http_error", f"HTTP {resp.status_code}")
                    continue
                if resp.status_code != 200:
                    raise ImageRejected("http_error", f"HTTP {resp.status_code}")
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/"):
                    raise ImageRejected("content_type", f"Content-Type {ctype or '(none)'!r}")
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > policy.max_bytes:
                    raise ImageRejected("too_large", f"Content-Length {length} > {policy.max_bytes}")
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
                try:
                    total = 0
                    with os.fdopen(fd, "wb") as out:
                        for chunk in resp.iter_content(chunk_size=65536):
                            total += len(chunk)
                            if total > policy.max_bytes:
                                raise ImageRejected("too_large", f"more than {policy.max_bytes} bytes")
                            out.write(chunk)
                    verify_image(tmp, policy)
                    final = folder / (_url_key(url) + _CONTENT_TYPE_EXT.get(ctype, ".img"))
                    os.replace(tmp, final)
                    return final
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        except ImageRejected:
            raise
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = _NetworkDown(f"{type(exc).__name__}: {exc}")
        except requests.RequestException as exc:
            raise ImageRejected("http_error", f"{type(exc).__name__}: {exc}") from None
    if isinstance(last, ImageRejected):
        raise last
    raise last or _NetworkDown("no attempt made")


def resolve_images(items: pd.DataFrame, dataset: str, *, allow_network: bool = True,
                   policy: ImagePolicy = ImagePolicy(), column: str = "image", base_dir: str | Path | None = None,
                   session: Any = None, progress: bool = True,
                   roots: tuple[Path, ...] | None = None) -> ImageReport:
    """Resolve ``items[column]`` (one reference per row; index = item key) to verified local image paths.

    Local paths (relative ones against ``base_dir``, default the current directory) are verified in place; with
    ``roots`` (a built suite passes its dataset folder and the configured image roots) a path that resolves
    outside every root is refused (``outside_root``) without being opened.
    URLs are served from ``cache_dir("images", dataset)`` when already fetched, else downloaded there when
    ``allow_network``. Nothing is raised per item: failures are counted by reason and logged as ONE warning
    per call (so an offline run over 7,000 URLs gives one line with a count).
    """
    paths: dict[Hashable, Path | None] = {}
    failed: Counter[str] = Counter()
    examples: dict[str, str] = {}
    missing = ok = 0
    folder: Path | None = None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    network_up = allow_network
    consecutive_down = 0
    refs = items[column] if column in items.columns else pd.Series([None] * len(items), index=items.index)

    def fail(key: Hashable, reason: str, detail: str) -> None:
        failed[reason] += 1
        examples.setdefault(reason, f"{key}: {detail}")
        paths[key] = None

    from mmsr_bench.progress import track

    with track(f"images {dataset}", total=len(refs)) if progress else contextlib.nullcontext() as task:
        for key, ref in refs.items():
            if task is not None:
                task.advance(1)
            if ref is None or (isinstance(ref, float) and pd.isna(ref)) or not str(ref).strip():
                missing += 1
                paths[key] = None
                continue
            ref = str(ref).strip()
            try:
                if _is_url(ref):
                    if folder is None:
                        folder = cache_dir("images", dataset)
                    hit = _cached(ref, folder)
                    if hit is not None:
                        try:
                            verify_image(hit, policy)
                            paths[key] = hit
                            ok += 1
                            continue
                        except ImageRejected:
                            hit.unlink(missing_ok=True)  # a damaged cache entry: fetch again
                    if not network_up:
                        fail(key, "offline", ref)
                        continue
                    if session is None:
                        import requests

                        session = requests.Session()
                    try:
                        paths[key] = _download(ref, folder, policy, session)
                        consecutive_down = 0
                        ok += 1
                    except _NetworkDown as exc:
                        consecutive_down += 1
                        if consecutive_down >= policy.max_consecutive_network_errors:
                            network_up = False
                            log.info("%s: %d consecutive network failures; treating the network as down",
                                     dataset, consecutive_down)
                        fail(key, "offline", f"{ref} ({exc})")
                elif "://" in ref or ref.lower().startswith("data:"):
                    fail(key, "bad_reference", ref)
                else:
                    p = Path(ref).expanduser()
                    p = p if p.is_absolute() else base / p
                    if roots is not None and not any(is_inside(p, r) for r in roots):
                        raise ImageRejected("outside_root", f"outside {', '.join(map(str, roots))}")
                    verify_image(p, policy)
                    paths[key] = p
                    ok += 1
            except ImageRejected as exc:
                fail(key, exc.reason, f"{ref} ({exc.detail})")

    report = ImageReport(dataset=dataset, paths=paths, ok=ok, missing=missing, failed=dict(failed),
                         examples=examples)
    if failed:
        parts = ", ".join(f"{n} {r}" for r, n in sorted(failed.items()))
        hint = ""
        if failed.get("offline"):
            hint = (f"; {failed['offline']} URL(s) could not be fetched (offline or unreachable): run "
                    f"`bench data images` with network access, or put the files under "
                    f"{cache_dir('images', dataset)}")
        log.warning("%s: %d of %d item images unusable (%s)%s; e.g. %s", dataset, report.n_failed,
                    len(refs), parts, hint, next(iter(examples.values())))
    return report


def report_paths_in_order(report: ImageReport | Mapping[Hashable, Path | None], keys: list[Hashable]) -> list[Path | None]:
    """Paths for ``keys`` in order (None where an item has no verified image)."""
    paths = report.paths if isinstance(report, ImageReport) else report
    return [paths.get(k) for k in keys]

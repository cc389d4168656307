"""Image resolver: refusals (content type, truncation, size, decompression bombs), offline reporting, the cache."""

from __future__ import annotations

import dataclasses
import io
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mmsr_bench.data.images import ImagePolicy, ImageRejected, resolve_images, verify_image


def _png(size=(32, 32), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _noisy_png(size=(64, 64)) -> bytes:
    """An incompressible PNG, so cutting its tail really truncates pixel data."""
    import numpy as np

    arr = np.random.default_rng(0).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


GOOD = _png()
NOISY = _noisy_png()
ROUTES = {
    "/ok.png": (200, "image/png", GOOD),
    "/ok2.png": (200, "image/png; charset=binary", _png(colour=(0, 0, 255))),
    "/page.html": (200, "text/html", b"<html>not an image</html>"),
    "/fake.png": (200, "image/png", b"\x89PNG\r\n\x1a\n this is not a png"),
    "/trunc.png": (200, "image/png", NOISY[: len(NOISY) // 2]),
    "/big.png": (200, "image/png", _noisy_png(size=(120, 120))),
    "/bomb.png": (200, "image/png", _png(size=(2000, 2000), colour=(255, 255, 255))),
    "/missing.png": (404, "text/plain", b"nope"),
}


class _Handler(BaseHTTPRequestHandler):
    counts: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802
        self.counts[self.path] = self.counts.get(self.path, 0) + 1
        status, ctype, body = ROUTES.get(self.path, (404, "text/plain", b""))
        if self.path == "/flaky.png":  # 503 on the first request, the image afterwards
            status, ctype, body = (503, "text/plain", b"busy") if self.counts[self.path] == 1 else ROUTES["/ok.png"]
        if self.path.startswith("/redirect/"):  # /redirect/N/ -> /redirect/N-1/ ... -> /ok.png
            n = int(self.path.split("/")[2])
            self.send_response(302)
            self.send_header("Location", f"/redirect/{n - 1}/" if n > 1 else "/ok.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    _Handler.counts = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.counts
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))


#: The test server listens on 127.0.0.1, which the default policy refuses to contact (see the private-host tests).
POLICY = ImagePolicy(timeout_s=5.0, retries=1, backoff_s=0.0, max_bytes=20_000, max_pixels=1_000_000,
                     allow_private_hosts=True)


def _frame(refs: list) -> pd.DataFrame:
    return pd.DataFrame({"title": [f"t{i}" for i in range(len(refs))], "image": refs}, index=range(1, len(refs) + 1))


def test_downloads_verifies_and_refuses_by_reason(server):
    base, counts = server
    refs = [f"{base}/ok.png", f"{base}/ok2.png", f"{base}/page.html", f"{base}/fake.png", f"{base}/trunc.png",
            f"{base}/big.png", f"{base}/bomb.png", f"{base}/missing.png", None, "ftp://example.org/x.png"]
    rep = resolve_images(_frame(refs), "unit", policy=POLICY)
    assert rep.ok == 2 and rep.missing == 1
    assert rep.failed == {"content_type": 1, "corrupt": 1, "truncated": 1, "too_large": 1, "too_many_pixels": 1,
                          "http_error": 1, "bad_reference": 1}
    assert rep.coverage == pytest.approx(0.2)
    assert rep.paths[1] is not None and rep.paths[1].read_bytes() == GOOD
    assert all(rep.paths[i] is None for i in range(3, 11))
    # nothing refused was left in the cache folder (no partial files either)
    files = sorted(p.name for p in rep.paths[1].parent.iterdir())
    assert len(files) == 2 and not any(f.startswith(".part") for f in files)
    # second call: served from the cache, no new request for the good images, even offline
    before = dict(counts)
    again = resolve_images(_frame(refs[:2]), "unit", policy=POLICY, allow_network=False)
    assert again.ok == 2 and again.failed == {}
    assert counts == before


def test_offline_urls_are_reported_once_with_a_count(caplog):
    refs = [f"http://images.invalid/{i}.jpg" for i in range(7)] + [None]
    with caplog.at_level(logging.WARNING, logger="mmsr_bench.data.images"):
        rep = resolve_images(_frame(refs), "offline-ds", allow_network=False, policy=POLICY)
    assert rep.ok == 0 and rep.failed == {"offline": 7} and rep.missing == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "offline-ds" in warnings[0].getMessage() and "7" in warnings[0].getMessage()


def test_unreachable_network_stops_trying_after_a_few_failures(caplog):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    refs = [f"http://127.0.0.1:{port}/{i}.png" for i in range(20)]
    calls = []

    import requests

    class CountingSession(requests.Session):
        def get(self, *a, **kw):
            calls.append(a[0])
            return super().get(*a, **kw)

    policy = ImagePolicy(timeout_s=2.0, retries=1, backoff_s=0.0, max_consecutive_network_errors=3,
                         allow_private_hosts=True)
    with caplog.at_level(logging.WARNING, logger="mmsr_bench.data.images"):
        rep = resolve_images(_frame(refs), "down", policy=policy, session=CountingSession())
    assert rep.failed == {"offline": 20}
    assert len(calls) == 3 * (policy.retries + 1)  # then the network is taken as down
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_retries_a_server_error_then_succeeds(server):
    base, counts = server
    rep = resolve_images(_frame([f"{base}/flaky.png"]), "flaky", policy=POLICY)
    assert rep.ok == 1 and counts["/flaky.png"] == 2  # one 503, then the image


def test_local_files(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(GOOD)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(NOISY[: len(NOISY) // 2])
    rel = tmp_path / "sub"
    rel.mkdir()
    (rel / "r.png").write_bytes(GOOD)
    refs = [str(good), str(trunc), str(tmp_path / "absent.png"), "sub/r.png", ""]
    rep = resolve_images(_frame(refs), "local", policy=POLICY, base_dir=tmp_path)
    assert rep.ok == 2 and rep.missing == 1
    assert rep.failed == {"truncated": 1, "not_found": 1}
    assert rep.paths[1] == good and rep.paths[4] == rel / "r.png"


def test_private_hosts_are_never_contacted_by_default(server, monkeypatch):
    monkeypatch.delenv("MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS", raising=False)
    base, counts = server
    port = base.rsplit(":", 1)[1]
    refs = [f"{base}/ok.png", f"http://localhost:{port}/ok.png", f"http://[::1]:{port}/ok.png",
            "http://169.254.169.254/latest/meta-data/x.png", "http://10.0.0.1/x.png", "http://192.168.1.1/x.png"]
    strict = ImagePolicy(timeout_s=1.0, retries=0, backoff_s=0.0)
    assert not strict.allow_private_hosts
    rep = resolve_images(_frame(refs), "ssrf", policy=strict)
    assert rep.ok == 0 and rep.failed == {"private_host": len(refs)}
    assert counts == {}  # nothing reached the server
    monkeypatch.setenv("MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS", "1")
    assert ImagePolicy().allow_private_hosts  # the documented opt-in


def test_redirects_are_bounded_and_each_hop_is_checked(server, monkeypatch):
    base, counts = server
    ok = resolve_images(_frame([f"{base}/redirect/3/"]), "redir", policy=POLICY)
    assert ok.ok == 1 and counts["/ok.png"] == 1
    too_many = resolve_images(_frame([f"{base}/redirect/9/"]), "redir2",
                              policy=dataclasses.replace(POLICY, max_redirects=4))
    assert too_many.failed == {"http_error": 1} and "redirects" in too_many.examples["http_error"]
    # a public first hop that redirects to a private address is refused at the second hop
    from mmsr_bench.data import images

    seen = []

    def fake_check(url, policy):
        seen.append(url)
        if "127.0.0.1" in url:
            raise ImageRejected("private_host", url)

    class _Resp:
        status_code, headers = 302, {"Location": f"{base}/ok.png"}

        def close(self):
            pass

    class _Session:
        def get(self, url, **kw):
            assert "127.0.0.1" not in url, "the private hop was contacted"
            return _Resp()

    monkeypatch.setattr(images, "check_public_host", fake_check)
    rep = resolve_images(_frame(["http://public.example/x.png"]), "redir3", policy=POLICY, session=_Session())
    assert rep.failed == {"private_host": 1} and seen == ["http://public.example/x.png", f"{base}/ok.png"]


def test_local_paths_outside_the_roots_are_never_opened(tmp_path, monkeypatch):
    root = tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    (root / "images" / "in.png").write_bytes(GOOD)
    outside = tmp_path / "secret.png"
    outside.write_bytes(GOOD)
    (root / "link.png").symlink_to(outside)
    refs = [str(root / "images" / "in.png"), str(outside), "../secret.png", "images/../../secret.png", "link.png"]
    opened = []
    import mmsr_bench.data.images as images

    real = images.verify_image
    monkeypatch.setattr(images, "verify_image", lambda p, policy=POLICY: (opened.append(Path(p)), real(p, policy))[1])
    rep = resolve_images(_frame(refs), "confined", policy=POLICY, base_dir=root, roots=(root,))
    assert rep.ok == 1 and rep.failed == {"outside_root": 4}
    assert opened == [root / "images" / "in.png"]
    extra = resolve_images(_frame(refs[:2]), "confined2", policy=POLICY, base_dir=root, roots=(root, tmp_path))
    assert extra.ok == 2  # an explicitly configured root admits its files


def test_decompression_bomb_guard_is_an_error_and_restored(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(size=(1200, 1200), colour=(0, 0, 0)))
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageRejected) as err:
        verify_image(bomb, ImagePolicy(max_pixels=1_000_000, max_bytes=10**7))
    assert err.value.reason == "too_many_pixels"
    assert Image.MAX_IMAGE_PIXELS == before
    assert verify_image(bomb, ImagePolicy(max_pixels=2_000_000, max_bytes=10**7)) == (1200, 1200)

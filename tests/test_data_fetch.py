"""`bench data fetch` against a local HTTP server on 127.0.0.1: it fetches, resumes a cut download with a Range
request, refuses a damaged gzip and a file whose bytes changed since its first download, and refuses private hosts
without the opt-in."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app


class _Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: dict[str, int] = {}  # name -> bytes sent before the connection is dropped (once)
    ranges: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_response(404)
            self.end_headers()
            return
        body = self.files[name]
        start = 0
        rng = self.headers.get("Range")
        if rng:
            self.ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.cut_after.pop(name, None)
        if cut is not None:
            self.wfile.write(body[start:start + cut])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server(monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Files.files, _Files.cut_after, _Files.ranges = {}, {}, []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/files/"
    httpd.shutdown()


def _gz(records: list[dict]) -> bytes:
    return gzip.compress("\n".join(json.dumps(r) for r in records).encode(), mtime=0)


def _baby_files() -> dict[str, bytes]:
    import random

    rnd = random.Random(0)  # review texts that do not compress away: a file of a few MB, cut mid-way
    reviews = [{"reviewerID": f"u{u}", "asin": f"A{(u + k) % 40:03d}", "unixReviewTime": 1000 + k, "overall": 5,
                "reviewText": "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(6000))}
               for u in range(60) for k in range(6)]
    meta = [{"asin": f"A{i:03d}", "title": f"item {i}"} for i in range(40)]
    return {"reviews_Baby_5.json.gz": _gz(reviews), "meta_Baby.json.gz": _gz(meta)}


def _fetch(base, *extra):
    return CliRunner().invoke(app, ["data", "fetch", "amazon4", "--dataset", "baby", "--base-url", base, *extra])


def test_fetch_resumes_a_cut_download_and_records_each_file(server, monkeypatch):
    from mmsr_bench.suites.build import raw_dir

    monkeypatch.setenv("MMSR_BENCH_ALLOW_PRIVATE_HOSTS", "1")
    _Files.files = _baby_files()
    big = "reviews_Baby_5.json.gz"
    _Files.cut_after = {big: len(_Files.files[big]) // 3}
    res = _fetch(server)
    assert res.exit_code == 1 and "run the command again to resume" in " ".join(res.output.split()), res.output
    part = raw_dir("amazon2014") / f"{big}.part"
    assert part.is_file() and 0 < part.stat().st_size < len(_Files.files[big])
    res = _fetch(server)
    assert res.exit_code == 0, res.output
    assert "resumed at" in res.output and any(r.startswith("bytes=") for r in _Files.ranges)
    for name, body in _Files.files.items():
        assert (raw_dir("amazon2014") / name).read_bytes() == body
    record = json.loads((raw_dir("amazon2014") / "fetched.json").read_text())["entries"]
    assert set(record) == set(_Files.files) and all(len(v["sha256"]) == 64 for v in record.values())
    res = _fetch(server)  # everything there and matching: nothing downloaded
    assert res.exit_code == 0 and res.output.count("already here") == 2, res.output


def test_a_damaged_or_changed_file_is_refused(server, monkeypatch):
    from mmsr_bench.suites.build import raw_dir

    monkeypatch.setenv("MMSR_BENCH_ALLOW_PRIVATE_HOSTS", "1")
    files = _baby_files()
    damaged = bytearray(files["meta_Baby.json.gz"])
    damaged[len(damaged) // 2] ^= 0xFF
    _Files.files = {**files, "meta_Baby.json.gz": bytes(damaged)}
    res = _fetch(server)
    assert res.exit_code == 1 and "not a complete gzip file" in res.output, res.output
    assert not (raw_dir("amazon2014") / "meta_Baby.json.gz").exists()
    _Files.files = files
    assert _fetch(server).exit_code == 0
    # the server now serves other (valid) bytes for a recorded name
    (raw_dir("amazon2014") / "meta_Baby.json.gz").unlink()
    _Files.files = {**files, "meta_Baby.json.gz": _gz([{"asin": "A000", "title": "changed"}])}
    res = _fetch(server)
    assert res.exit_code == 1 and "recorded at its first download; refused" in " ".join(res.output.split())
    assert not (raw_dir("amazon2014") / "meta_Baby.json.gz").exists()


def test_private_hosts_need_the_opt_in(server, monkeypatch):
    monkeypatch.delenv("MMSR_BENCH_ALLOW_PRIVATE_HOSTS", raising=False)
    monkeypatch.delenv("MMSR_BENCH_ALLOW_PRIVATE_IMAGE_HOSTS", raising=False)
    _Files.files = _baby_files()
    res = _fetch(server)
    assert res.exit_code == 1 and "MMSR_BENCH_ALLOW_PRIVATE_HOSTS=1" in res.output, res.output
    res = CliRunner().invoke(app, ["data", "fetch", "amazon4", "--dataset", "beauty", "--base-url", server])
    assert res.exit_code == 1 and "nothing to fetch" in res.output

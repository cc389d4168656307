"""A throwaway PostgreSQL server for tests: ``initdb`` into a temporary folder, listen on 127.0.0.1 only (a free
port, unix sockets in that folder, trust authentication), stop and delete everything at the end.

Used by the ``postgres_url`` fixtures in ``tests/conftest.py``; usable by hand too::

    with postgres_server() as server_url:          # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        url = create_database(server_url)          # a fresh, empty database on it

``initdb`` refuses to run as root, so under root every server binary runs as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SERVER_USER = "postgres"  # the OS user the server runs as under root, and the database superuser it creates
#: The server's default time zone: deliberately not UTC, so a client relying on the server's zone shows up in tests.
SERVER_TIMEZONE = "Asia/Kolkata"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, pg_ctl and postgres (or the folder of an
    ``initdb`` on PATH)."""
    def version(path: str) -> tuple:
        v = Path(path).parent.parent.name
        return tuple(int(p) if p.isdigit() else 0 for p in v.split("."))

    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        cands.append(on_path)
    for initdb in cands:
        d = Path(initdb).parent
        if all((d / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _as_server_user() -> bool:
    return os.geteuid() == 0


def unavailable_reason() -> str | None:
    """Why no throwaway server can be started here (one line), or None when it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]'), so PostgreSQL stores cannot be tested"
    if find_bin_dir() is None:
        return ("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); install postgresql or "
                "set MMSR_BENCH_TEST_POSTGRES_URL to an existing server")
    if _as_server_user():
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return (f"running as root and there is no {SERVER_USER!r} user to run the PostgreSQL server as; "
                    "set MMSR_BENCH_TEST_POSTGRES_URL to an existing server")
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing, so the PostgreSQL server cannot be started"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    if _as_server_user():
        cmd = ["runuser", "-u", SERVER_USER, "--"] + cmd
    return subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)


def _log_tail(log: Path, n: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no server log)"


@contextmanager
def postgres_server(attempts: int = 3) -> Iterator[str]:
    """Start a fresh PostgreSQL server and yield its SQLAlchemy URL (database ``postgres``, user ``postgres``, no
    password); stop it and delete its folder on exit. Raises RuntimeError (with the server log) if it cannot start."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bindir = find_bin_dir()
    # not under pytest's tmp_path: that is private to root (0700), and the server user must reach its folder
    root = Path(tempfile.mkdtemp(prefix="mmsr-bench-pg-"))
    data, log = root / "data", root / "server.log"
    if _as_server_user():
        pw = pwd.getpwnam(SERVER_USER)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    os.chmod(root, 0o700)
    started = False
    try:
        res = _run([str(bindir / "initdb"), "-D", str(data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8",
                    "--no-locale", "--no-sync", "--no-instructions"], cwd=root)
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed ({res.returncode}): {(res.stderr or res.stdout).strip()}")
        port = None
        for _ in range(attempts):  # a free port can be taken between probing and binding: try another
            port = _free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                    f"-c TimeZone={SERVER_TIMEZONE}")
            res = _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "120",
                        "start"], cwd=root)
            if res.returncode == 0:
                started = True
                break
        if not started:
            raise RuntimeError(f"the PostgreSQL server did not start: {(res.stderr or res.stdout).strip()}\n"
                               f"{_log_tail(log)}")
        yield f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def _libpq(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as a libpq connection string."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server_url: str, name: str | None = None) -> str:
    """Create a new, empty database on the server at ``server_url`` and return the SQLAlchemy URL for it."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = name or f"mmsr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop a database created by :func:`create_database` (closing any connection still open to it)."""
    import psycopg

    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

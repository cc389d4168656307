"""The leaderboard dashboard (Streamlit + plotly): ``bench dashboard`` runs :func:`launch`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(port: int, *, address: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line: headless, loopback only, no usage statistics, no file watcher."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.headless", "true", "--server.address", address, "--server.port", str(int(port)),
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "viewer"]


def launch(db_url: str | None, port: int) -> int:
    """Serve the dashboard on http://127.0.0.1:<port> for the store ``db_url`` (default: ``$MMSR_BENCH_DB`` or
    ``sqlite:///results.db``) until interrupted; returns streamlit's exit code."""
    from mmsr_bench.errors import BenchError

    if not 0 < int(port) < 65536:
        raise BenchError(f"--port {port}: give a TCP port between 1 and 65535")
    env = dict(os.environ)
    if db_url:
        env["MMSR_BENCH_DB"] = db_url
    cmd = streamlit_command(port)
    from mmsr_bench.results.store import mask_url

    log.info("serving the dashboard on http://127.0.0.1:%d (store %s)", port,
             mask_url(env["MMSR_BENCH_DB"]) if env.get("MMSR_BENCH_DB") else "default")
    try:
        return subprocess.run(cmd, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 0

"""Time the dashboard's queries on a large store: 5,000 runs with per-user vectors in a temporary SQLite file.

Reports, cold (first call, nothing cached) and cached (``st.cache_data`` keyed on ``Store.last_change()``):
the cache key itself, the runs table, the leaderboard (mmsr_bench.results.leaderboard.build_board), and optionally the
leaderboard with significance markers (mark_board) on one dataset.

    .venv/bin/python benchmarks/dashboard_queries.py [--runs 5000] [--users 1000] [--significance] [--pages]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
logging.getLogger("streamlit").setLevel(logging.ERROR)
os.environ.setdefault("STREAMLIT_GLOBAL_SHOW_WARNING_ON_DIRECT_EXECUTION", "false")


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--significance", action="store_true", help="also time mark_board on one dataset")
    ap.add_argument("--pages", action="store_true", help="also time every page's full render with AppTest")
    args = ap.parse_args()

    from mmsr_bench.dashboard import queries as q
    from mmsr_bench.dashboard import ui
    from mmsr_bench.dashboard.fixture import bulk_fill

    for name in ("streamlit.runtime.caching.cache_data_api", "streamlit.runtime.scriptrunner_utils.script_run_context",
                 "streamlit"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'big.db'}"
        t_fill, _ = timed(lambda: bulk_fill(url, args.runs, n_users=args.users))
        size_mb = (Path(tmp) / "big.db").stat().st_size / 2**20
        print(f"filled {args.runs} runs x 4 per-user vectors of {args.users} users in {t_fill:.1f} s "
              f"({size_mb:.0f} MB)")
        store = q.open_store(url)
        t_tok, token = timed(store.last_change, repeat=20)
        print(f"{'cache key Store.last_change()':44s} {1000 * t_tok:9.2f} ms (median of 20)")

        rows = []
        t_cold, runs = timed(lambda: ui.runs_df(url, token))
        t_hot, _ = timed(lambda: ui.runs_df(url, token), repeat=20)
        rows.append(("runs table (all runs)", t_cold, t_hot))
        datasets = tuple(sorted(runs["dataset"].unique()))
        metrics = ("hr@10", "ndcg@10", "mrr")
        t_cold, (board, _) = timed(lambda: ui.board(url, token, "synth4", datasets, metrics, None, "t", 0.05))
        t_hot, _ = timed(lambda: ui.board(url, token, "synth4", datasets, metrics, None, "t", 0.05), repeat=20)
        rows.append((f"leaderboard ({len(board.models)} models x {len(datasets)} datasets)", t_cold, t_hot))
        t_plain, _ = timed(lambda: q.leaderboard(store, "synth4", list(datasets), list(metrics)), repeat=3)
        rows.append(("leaderboard without the cache (median of 3)", t_plain, float("nan")))
        if args.significance:
            ref = board.models[len(board.models) // 2]
            call = lambda: ui.board(url, token, "synth4", datasets[:1], metrics, ref, "t", 0.05)  # noqa: E731
            t_cold, _ = timed(call)
            t_hot, _ = timed(call, repeat=20)
            rows.append((f"leaderboard + markers vs {ref} on {datasets[0]}", t_cold, t_hot))
        print(f"{'query':44s} {'cold':>10s} {'cached':>12s}")
        for name, cold, hot in rows:
            hot_s = "" if hot != hot else f"{1000 * hot:9.2f} ms"
            print(f"{name:44s} {cold:8.3f} s {hot_s:>12s}")
        if args.pages:
            time_pages(url)


def time_pages(url: str) -> None:
    """A full script run of every page (AppTest, same process: the query cache above is shared)."""
    from streamlit.testing.v1 import AppTest

    os.environ["MMSR_BENCH_DB"] = url
    app = str(Path(__file__).resolve().parent.parent / "mmsr_bench" / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=600)
    print(f"{'page render (AppTest)':44s} {'first':>10s} {'rerun':>12s}")
    for page in ("leaderboard", "ablations", "compare", "runs", "hallucination"):
        if page != "leaderboard":
            at.switch_page(f"app_pages/{page}.py")
        first, _ = timed(at.run)
        again, _ = timed(at.run)
        if at.exception:
            raise SystemExit(f"{page}: {at.exception[0].value}")
        print(f"{page:44s} {first:8.3f} s {1000 * again:9.0f} ms")


if __name__ == "__main__":
    main()

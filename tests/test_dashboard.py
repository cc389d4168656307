"""The dashboard pages under streamlit.testing.v1.AppTest against a fixture store (several models, seeds, two
datasets, model variants, perturbation runs, a failed run, a hallucination artifact), the empty states, and the
pure query helpers behind the pages."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from mmsr_bench import dashboard
from mmsr_bench.dashboard import queries as q
from mmsr_bench.dashboard.fixture import (HOSTILE_HTML, HOSTILE_NAMES, HOSTILE_SHORT, FixtureSpec, build_fixture_store,
                                           build_hostile_store, build_reference_folder)
from mmsr_bench.errors import BenchError
from mmsr_bench.results import reference
from mmsr_bench.results.ablations import compute
from mmsr_bench.results.leaderboard import build_board, to_markdown
from mmsr_bench.results.significance import compare
from mmsr_bench.results.store import Artifact, Run, Store

APP = str(Path(dashboard.__file__).resolve().parent / "app.py")
SPEC = FixtureSpec(skill=(("pop", 0.15), ("sasrec", 0.40), ("mllm-srec-qlora", 0.55), ("mllm-srec-text", 0.45)),
                   seeds=(0, 1), perturbations=("blank:0.2", "blank:0.5"), n_users=150)
TIMEOUT = 90


@pytest.fixture(autouse=True)
def _no_reference_runs(monkeypatch, tmp_path_factory):
    """No reference runs unless a test gives some: a checkout's reference-runs/ would turn the empty states into
    reference leaderboards."""
    monkeypatch.setenv(reference.ENV, str(tmp_path_factory.getbasetemp() / "no-reference-runs"))


@pytest.fixture(autouse=True)
def _main_module_restored(monkeypatch):
    """Streamlit's AppTest leaves ``sys.modules['__main__']`` as the app script; a later test's spawned worker process
    would re-run the dashboard as its main module. Restore it after each test."""
    import sys

    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])


@pytest.fixture(scope="module")
def fixture_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'results.db'}"
    build_fixture_store(url, SPEC)
    return url


def _app(monkeypatch, url: str, page: str | None = None, **query: str) -> AppTest:
    monkeypatch.setenv("MMSR_BENCH_DB", url)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def _styled(at: AppTest, idx: int = 0) -> tuple[pd.DataFrame, str]:
    """A Styler-backed st.dataframe's display text and CSS."""
    styler = at.dataframe[idx].proto.arrow_data.styler
    return pa.ipc.open_stream(styler.display_values).read_all().to_pandas(), styler.styles


def _means(url: str, dataset: str, metric: str) -> dict[str, float]:
    """Expected leaderboard means straight from the stored runs (untagged, completed), independent of build_board."""
    out: dict[str, list[float]] = {}
    for r in Store(url).runs(suite=SPEC.suite, dataset=dataset):
        if r.variant == "":
            out.setdefault(r.model, []).append(r.metrics[metric])
    return {m: float(np.mean(v)) for m, v in out.items()}


# ---------------------------------------------------------------------------------------------- empty states


def test_missing_store_shows_the_command_and_creates_nothing(monkeypatch, tmp_path):
    db = tmp_path / "absent.db"
    at = _app(monkeypatch, f"sqlite:///{db}")
    assert "No results store" in at.info[0].value
    assert "bench run --suite synth4 --model pop" in at.code[0].value
    assert not db.exists()  # read-only: the dashboard never creates the store


def test_store_without_runs_shows_the_command(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url)  # tables, no runs
    at = _app(monkeypatch, url)
    assert "has no runs yet" in at.info[0].value
    assert at.code[0].value.startswith("bench run --suite synth4 --model pop")


# ----------------------------------------------------------------------------------------------------- pages


def test_leaderboard_values_best_bold_markers_and_downloads(monkeypatch, fixture_url):
    at = _app(monkeypatch, fixture_url)
    assert at.title[0].value == "Leaderboard"
    assert at.selectbox(key="lb_suite").value == "synth4"
    assert at.multiselect(key="lb_datasets").value == ["beauty", "toys"]
    assert at.multiselect(key="lb_metrics").value == ["hr@10", "ndcg@10", "mrr"]
    text, css = _styled(at)
    assert set(text.index) == {"pop", "sasrec", "mllm-srec-qlora", "mllm-srec-text"}
    expected = _means(fixture_url, "toys", "ndcg@10")
    for model, mean in expected.items():
        assert text.loc[model, "toys/ndcg@10"].startswith(f"{mean:.4f} ± ")  # two seeds -> a CI
    best_row = list(text.index).index(max(expected, key=expected.get))
    col = list(text.columns).index("toys/ndcg@10")
    assert f"row{best_row}_col{col}" in css.split("{")[0] and "font-weight: bold" in css
    assert [b.label for b in at.get("download_button")] == ["CSV", "Markdown", "LaTeX", "JSON"]
    assert len(at.get("plotly_chart")) == 1
    board = build_board(Store(fixture_url), "synth4", ["beauty", "toys"], ["hr@10", "ndcg@10", "mrr"])
    assert at.code[0].value.strip() == to_markdown(board).strip()  # the harness exporter, shown as exported

    at.selectbox(key="lb_against").set_value("sasrec").run()
    assert not at.exception
    text, _ = _styled(at)
    assert text.loc["sasrec"].map(lambda s: "▲" not in s and "▼" not in s).all()
    assert text.loc["pop", "beauty/hr@10"].endswith("▼")  # 0.15 vs 0.40 hit rate on 150 users
    assert text.loc["mllm-srec-qlora", "beauty/hr@10"].endswith("▲")
    assert any("significantly better/worse than sasrec" in c.value for c in at.caption)

    at.multiselect(key="lb_datasets").set_value(["beauty"]).run()
    text, _ = _styled(at)
    assert list(text.columns) == ["hr@10", "ndcg@10", "mrr"]


def test_leaderboard_reference_from_the_query_string(monkeypatch, fixture_url):
    monkeypatch.setenv("MMSR_BENCH_DB", fixture_url)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["against"] = "pop"
    at.run()
    assert not at.exception and at.selectbox(key="lb_against").value == "pop"
    text, _ = _styled(at)
    assert text.loc["mllm-srec-qlora", "beauty/hr@10"].endswith("▲")


def test_ablations_heatmaps_and_significance(monkeypatch, fixture_url):
    at = _app(monkeypatch, fixture_url, "ablations")
    assert at.selectbox(key="ab_base").value == "mllm-srec-qlora"
    assert at.text_input(key="ab_prefix_mllm-srec-qlora").value == "mllm-srec-"
    assert len(at.get("plotly_chart")) == 2  # one heatmap per dataset
    table = at.dataframe[0].value
    assert set(table["variant"]) == {"mllm-srec-text", "mllm-srec-qlora [blank:0.2]", "mllm-srec-qlora [blank:0.5]"}
    row = table[(table["dataset"] == "beauty") & (table["variant"] == "mllm-srec-text")
                & (table["metric"] == "hr@10")].iloc[0]
    base = _means(fixture_url, "beauty", "hr@10")
    assert row["rel_change"] == pytest.approx(base["mllm-srec-text"] / base["mllm-srec-qlora"] - 1, rel=1e-9)
    assert table["significant"].dtype == bool and table["p_corrected"].between(0, 1).all()

    at.selectbox(key="ab_base").set_value("pop").run()
    assert not at.exception
    assert "No variants of `pop`" in at.info[0].value


def test_ablations_default_base_is_the_full_model_on_a_tie(monkeypatch, tmp_path):
    """With only untagged MLLM-SRec variants every one has the same number of variants; the page starts on the
    study's full model, the base RQ2-RQ4 are tested against, not the first name in alphabetical order."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    build_fixture_store(url, FixtureSpec(datasets=("beauty",), seeds=(0,), n_users=60, perturbations=(),
                                         skill=(("pop", 0.2), ("mllm-srec-image", 0.3), ("mllm-srec-qlora", 0.4)),
                                         failed_run=False, hallucination=False))
    at = _app(monkeypatch, url, "ablations")
    assert at.selectbox(key="ab_base").value == "mllm-srec-qlora"
    assert set(at.dataframe[0].value["variant"]) == {"mllm-srec-image"}


def test_compare_table_and_plots(monkeypatch, fixture_url):
    at = _app(monkeypatch, fixture_url, "compare")
    a, b = at.selectbox(key="cmp_a").value, at.selectbox(key="cmp_b").value
    ra, rb = Store(fixture_url).run(a), Store(fixture_url).run(b)
    assert ra.model != rb.model and ra.seed == rb.seed and ra.variant == rb.variant == ""  # a telling default
    frame = at.dataframe[0].value
    assert list(frame["metric"]) == ["hr@10", "ndcg@10", "mrr", "auc"]
    store = Store(fixture_url)
    va, vb = store.per_user(a), store.per_user(b)
    got = frame.set_index("metric").loc["ndcg@10"]
    assert got["diff"] == pytest.approx(float(va["ndcg@10"].mean() - vb["ndcg@10"].mean()), abs=1e-12)
    assert got["n"] == SPEC.n_users
    assert len(at.get("plotly_chart")) == 2
    at.selectbox(key="cmp_test").set_value("wilcoxon").run()
    assert not at.exception and at.dataframe[0].value["p_value"].equals(at.dataframe[0].value["p_wilcoxon"])


def test_runs_filters_detail_and_diff(monkeypatch, fixture_url):
    at = _app(monkeypatch, fixture_url, "runs")
    n_all = len(Store(fixture_url).runs(status=None))
    assert at.dataframe[0].value.shape[0] == n_all
    assert {"config_hash", "fit_seconds", "peak_memory_mb", "host", "status", "ndcg@10"} <= set(
        at.dataframe[0].value.columns)
    at.multiselect(key="runs_status").set_value(["failed"]).run()
    table = at.dataframe[0].value
    assert list(table["model"]) == ["gptrec"] and list(table["status"]) == ["failed"]
    assert any("CUDA out of memory" in w.value for w in at.warning)  # the failed run's detail

    at.multiselect(key="runs_status").set_value([]).run()
    at.multiselect(key="runs_model").set_value(["sasrec"]).run()
    ids = list(at.dataframe[0].value["id"])
    assert len(ids) == 2 * len(SPEC.seeds)
    at.selectbox(key="runs_detail").set_value(ids[0]).run()
    pop_run = next(r.id for r in Store(fixture_url).runs(model="pop"))
    at.selectbox(key=f"runs_diff_{ids[0]}").set_value(pop_run).run()
    diff = at.dataframe[1].value
    assert {"model", "config.model"} <= set(diff["key"])
    assert diff.set_index("key").loc["model"].tolist() == ["sasrec", "pop"]


def test_hallucination_distances_and_perturbation_curves(monkeypatch, fixture_url):
    at = _app(monkeypatch, fixture_url, "hallucination")
    summary = at.dataframe[0].value
    arts = Store(fixture_url).artifacts(kind="hallucination")
    assert len(summary) == len(arts) == 2
    payload = json.loads(arts[0].payload_json)
    assert summary.iloc[0]["flagged_share"] == pytest.approx(payload["flagged_share"])
    assert [m.label for m in at.metric][:2] == ["flagged share", "threshold"]
    curves = at.dataframe[1].value
    blank = curves[(curves["dataset"] == "beauty") & (curves["kind"] == "blank")].sort_values("share")
    assert list(blank["share"]) == [0.0, 0.2, 0.5]
    assert blank.iloc[0]["mean"] == pytest.approx(_means(fixture_url, "beauty", "ndcg@10")["mllm-srec-qlora"])
    assert len(at.get("plotly_chart")) == 3  # one histogram + one curve per dataset


def test_hallucination_empty_state_and_bad_artifact(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    store = build_fixture_store(url, FixtureSpec(skill=(("pop", 0.2),), seeds=(0,), datasets=("beauty",),
                                                 perturbations=(), n_users=50, hallucination=False,
                                                 failed_run=False))
    at = _app(monkeypatch, url, "hallucination")
    assert "No hallucination analyses" in at.info[0].value
    assert "No perturbation runs yet" in at.info[1].value

    store.add_artifact(Artifact(suite="synth4", dataset="beauty", model="pop", kind="hallucination",
                                payload_json=json.dumps({"dataset": "beauty", "distances": "oops", "threshold": 1,
                                                         "flagged_share": 0.1})))
    at = _app(monkeypatch, url, "hallucination")
    assert "field 'distances' must be a list of numbers" in at.warning[0].value


def test_every_page_on_a_store_with_only_a_failed_run(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'failed.db'}"
    Store(url).add_run(Run(group_id="g", suite="synth4", suite_hash="h", dataset="beauty", model="gptrec",
                           status="failed", error="boom"))
    at = _app(monkeypatch, url)
    assert "No completed runs" in at.info[0].value
    for page in ("ablations", "compare", "runs", "hallucination"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])


# ------------------------------------------------------------------------------------------- hostile names

_WJ = "\u2060"  # the invisible word joiner ui.md_text puts after ":" and "@"
_SAFE_TAGS = {"u"}  # the HTML the pages write themselves (tables.to_markdown's second best)
_BLOCK_MARKUP = {"heading_open", "bullet_list_open", "ordered_list_open", "blockquote_open", "hr", "lheading_open"}
_AUTOLINK = re.compile(r"(?i)https?://|www\.|[-.\w+]+@[-\w]+(\.[-\w]+)+")  # GFM literal autolinks (Streamlit's)
_EMOJI = re.compile(r":[\w+-]+:|:material/")  # Streamlit's emoji and icon shortcodes
_OWN_BOLD = "Best **bold**, second underlined"  # the Study page's legend (no stored text in it)
_MARKDOWN_BODIES = {"markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success",
                    "metric"}  # elements whose body is markdown (st.json's and st.code's are shown as they are)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _live_markup(source: str, allow_html: bool) -> tuple[list[str], str]:
    """What Streamlit's markdown would make of ``source``, checked with markdown-it (CommonMark, GFM strikethrough and
    tables, every link target allowed, HTML only where the element allows it) plus the text-level transforms
    markdown-it lacks (GFM literal autolinks, emoji shortcodes): (the live constructs found, the shown text)."""
    md = MarkdownIt("commonmark", {"html": allow_html}).enable(["strikethrough", "table"])
    md.validateLink = lambda url: True  # Streamlit keeps a javascript: link as a link (href="#"), so count it
    live, shown = [], []
    for tok in md.parse(source):
        if tok.type in _BLOCK_MARKUP:
            live.append(tok.type)
        emphasis = False
        if tok.type == "html_block":
            parser = _Tags()
            parser.feed(tok.content)
            live += [f"<{t} {a}>" for t, a in parser.tags if t not in _SAFE_TAGS or any(k.startswith("on") for k in a)]
            shown += parser.text
        for child in tok.children or []:
            if child.type in ("link_open", "image") or (child.type == "html_inline"
                                                         and child.content not in ("<u>", "</u>")):  # to_markdown's
                live.append(f"{child.type} {child.content or child.attrs}")
            if emphasis and "bold" in child.content and _OWN_BOLD not in source:  # a stored **bold**, not the page's
                live.append(f"emphasis {child.content}")  # own **Metrics** or the Study page's legend
            emphasis = child.type in ("strong_open", "em_open", "s_open")
            if child.type == "text":
                live += [f"autolink {m[0]}" for m in _AUTOLINK.finditer(child.content)]
                live += [f"emoji {m[0]}" for m in _EMOJI.finditer(child.content)]
            if child.type in ("text", "code_inline"):
                shown.append(child.content)
    return live, "".join(shown).replace(_WJ, "")


def _page_markup(at: AppTest) -> tuple[list[tuple[str, str, list[str]]], str]:
    """Every markdown string of the page (main and sidebar: bodies of markdown, captions, headings, alerts and metrics,
    widget labels and help), each with its live constructs; and all the page's shown text."""
    found, text = [], []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        for name in ("body", "label", "help"):
            if proto is None or (name == "body" and node.type not in _MARKDOWN_BODIES):
                continue
            source = getattr(proto, name, None)
            if isinstance(source, str) and source:
                allow = name == "body" and bool(getattr(proto, "allow_html", False))
                live, shown = _live_markup(source, allow)
                found.append((node.type, source, live))
                text.append(shown)
    return found, "\n".join(text)


def _plotly_strings(at: AppTest) -> list[str]:
    """Every string in the page's figures (titles, labels, categories, legend entries, hover templates)."""
    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)

    return [t for node in at._tree if node.type == "plotly_chart" for t in strings(json.loads(node.proto.spec))]


@pytest.fixture(scope="module")
def hostile_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'results.db'}"
    build_hostile_store(url)
    return url


def test_md_text_shows_any_text_as_itself():
    from mmsr_bench.dashboard import ui

    for text in (*HOSTILE_NAMES, HOSTILE_HTML, *HOSTILE_SHORT, "see http://a.b, www.c.d or me@e.f :smile: :red[x]",
                 "$x^2$ ~~s~~ _i_ `c` \\ & &lt; |a|b|", "# heading", "- item", "+ item", "1. item", "> quote", "===",
                 "a\n\n# b\n---", "x\x1b[31mred\x07"):
        live, shown = _live_markup(ui.md_text(text), allow_html=False)
        assert not live, (text, live)
        assert shown == " ".join(text.replace("\x1b", "").replace("\x07", "").split()), text
        live, _ = _live_markup("before " + ui.md_text(text) + " after", allow_html=True)
        assert not live, (text, live)
    assert ui.file_name('leaderboard_<img src=x>/../"a".csv') == "leaderboard__img_src_x_.._a_.csv"
    assert ui.file_name("../../etc/passwd") == "etc_passwd"


def test_inert_table_keeps_ordinary_tables_and_stills_hostile_names(fixture_url):
    """The Study page shows the markdown `bench report study` prints (unchanged for ordinary names); a table of
    hostile names, through the same writer, renders no tag, link, image or emphasis made of them."""
    from mmsr_bench.dashboard import ui
    from mmsr_bench.results import study, study_report, tables

    opts = study.validate("synth4", budget="default", db=fixture_url, check_db=False)
    ordinary = study_report.all_tables(study_report.build_report(Store(fixture_url), opts))
    assert ordinary and all(tables.to_markdown(ui.inert_table(t)) == tables.to_markdown(t) for t in ordinary)
    names = (*HOSTILE_NAMES, HOSTILE_HTML, *HOSTILE_SHORT, "www.x.y :smile: ~~s~~ $x$ _i_ a@b.cd \\[x](y)",
             "> quote", "`code`", "# heading", "1. item", "&lt;b&gt;")
    hostile = tables.Table(("model", *names), tuple((n, *[tables.Cell("0.1")] * len(names)) for n in names),
                           title=names[1], footer="\n".join(names) + "\nas `bench compare`",
                           groups=((names[2], len(names)),))
    live, shown = _live_markup(tables.to_markdown(ui.inert_table(hostile)), allow_html=True)
    assert not live, live
    for name in names:
        assert name in shown, name


def test_unreadable_store_message_shows_its_path_as_text(monkeypatch, tmp_path):
    folder = tmp_path / "x _bold_ y"  # the error names the store's path (mask_url percent-encodes * [ ], not _)
    folder.mkdir()
    (folder / "r.db").write_bytes(b"not a database " * 100)
    at = _app(monkeypatch, f"sqlite:///{folder / 'r.db'}")
    found, text = _page_markup(at)
    assert "Cannot read the results store" in text and "file is not a database" in text and "x _bold_ y/r.db" in text
    assert not [(source, live) for _, source, live in found if live]


def test_hostile_names_are_shown_as_text_on_every_page(monkeypatch, hostile_url):
    """Model names, code versions, hosts and errors that read as HTML, markdown links, emphasis or a spreadsheet formula
    never become a tag, link, image or formatting on any page (nor in the figures), and are shown as typed."""
    at = _app(monkeypatch, hostile_url, against=HOSTILE_NAMES[2])  # the footer names the significance model
    assert set(_styled(at)[0].index) == set(HOSTILE_NAMES) | {"pop", "sasrec"}
    expect = {"leaderboard": [HOSTILE_NAMES[2]], "ablations": [HOSTILE_NAMES[1]],
              "compare": [], "runs": [*HOSTILE_NAMES, HOSTILE_HTML],
              "hallucination": [HOSTILE_NAMES[3]], "study": list(HOSTILE_SHORT)}
    for page, names in expect.items():
        if page != "leaderboard":
            at.switch_page(f"app_pages/{page}.py").run()
            assert not at.exception, (page, [e.value for e in at.exception])
        if page == "runs":  # the failed run's detail: its error in a warning
            at.selectbox(key="runs_detail").set_value(Store(hostile_url).runs(status="failed")[0].id).run()
        if page == "compare":  # the caption names both runs' models
            names = [Store(hostile_url).run(at.selectbox(key=k).value).model for k in ("cmp_a", "cmp_b")]
            assert set(names) & set(HOSTILE_NAMES), names
        found, text = _page_markup(at)
        assert found, page
        live = [(kind, source, bits) for kind, source, bits in found if bits]
        assert not live, (page, live)
        for name in names:
            assert name in text, (page, name, text[:3000])
        for text in _plotly_strings(at):  # plotly.js renders <b>, <a href>, <br> in titles, labels and hover text
            assert not re.search(r"(?i)<(img|a|h2|b|i|script)[\s>]", text), (page, text)
    assert "&lt;img src=x onerror=alert(1)&gt;" in _plotly_strings(at.switch_page("app_pages/leaderboard.py").run())


# ---------------------------------------------------------------------------------------------- reference runs

REF_SPEC = FixtureSpec(skill=(("pop", 0.12), ("sasrec", 0.45), ("mllm-srec-qlora", 0.55), ("mllm-srec-text", 0.50)),
                       datasets=("beauty",), seeds=(0, 1), perturbations=("blank:0.5",), n_users=150,
                       failed_run=False, hallucination=False)
LOCAL_SPEC = FixtureSpec(skill=(("pop", 0.15), ("sasrec", 0.40), ("mllm-srec-qlora", 0.60), ("mllm-srec-image", 0.5)),
                         datasets=("beauty",), seeds=(0,), perturbations=(), n_users=150, failed_run=False,
                         hallucination=False, real_fingerprint=True)


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory) -> Path:
    """Run files of simulated reference runs (what reference-runs/ holds), made with `bench store export`."""
    return build_reference_folder(tmp_path_factory.mktemp("ref") / "reference-runs", REF_SPEC, seed=7)


@pytest.fixture(scope="module")
def local_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('local') / 'results.db'}"
    build_fixture_store(url, LOCAL_SPEC, seed=3)
    return url


def _plain_means(url: str, metric: str = "hr@10", dataset: str = "beauty") -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for r in Store(url).runs(dataset=dataset):
        if r.variant == "":
            out.setdefault(r.model, []).append(r.metrics[metric])
    return {m: float(np.mean(v)) for m, v in out.items()}


def _sidebar_text(at: AppTest) -> str:
    return "\n".join(c.value for c in at.sidebar.caption)


def test_reference_run_files_round_trip_the_fixture(reference_folder):
    """The folder is `bench store export` output: the cached store built from it holds every fixture run."""
    files = sorted(reference_folder.rglob("*.json"))
    assert len(files) == len(REF_SPEC.skill) * len(REF_SPEC.seeds) + len(REF_SPEC.seeds)  # + the perturbed runs
    runs = Store(reference.reference_url(reference_folder)).runs()
    assert {r.model for r in runs} == {m for m, _ in REF_SPEC.skill}


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_reference_runs_fill_an_empty_dashboard(monkeypatch, tmp_path, reference_folder, state):
    db = tmp_path / "results.db"
    if state == "empty":
        Store(f"sqlite:///{db}")  # tables, no runs
    monkeypatch.setenv(reference.ENV, str(reference_folder))
    at = _app(monkeypatch, f"sqlite:///{db}")
    assert at.toggle(key="show_reference").value is True  # on by default: nothing of the user's to show
    assert at.title[0].value == "Leaderboard" and not at.info  # no empty state
    text, _ = _styled(at)
    expected = _plain_means(reference.reference_url(reference_folder))
    assert set(text.index) == {m + " (reference)" for m in expected}  # every row marked as reference
    for model, mean in expected.items():
        assert text.loc[model + " (reference)", "hr@10"].startswith(f"{mean:.4f} ± ")
    side = _sidebar_text(at)
    assert f"reference runs from `{reference_folder}` ({len(REF_SPEC.skill) * 2 + 2} runs)" in side
    assert "marked `(reference)`" in side
    assert ("does not exist yet" if state == "missing" else "has no runs yet") in side
    assert any("this project's reference runs, not yours" in c.value for c in at.caption)
    assert (not db.exists()) if state == "missing" else len(Store(f"sqlite:///{db}").runs(status=None)) == 0

    at.switch_page("app_pages/runs.py").run()  # every page reads the same (marked) store
    assert not at.exception, [e.value for e in at.exception]
    assert set(at.dataframe[0].value["model"]) == {m + " (reference)" for m in expected}
    at.switch_page("app_pages/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.header] == ["Reference runs"]
    assert "RQ1: overall performance" in "\n".join(m.value for m in at.markdown)
    assert [b.label for b in at.get("download_button")] == ["Markdown", "LaTeX", "HTML"]


def test_reference_toggle_off_shows_the_empty_state(monkeypatch, tmp_path, reference_folder):
    db = tmp_path / "absent.db"
    monkeypatch.setenv(reference.ENV, str(reference_folder))
    at = _app(monkeypatch, f"sqlite:///{db}")
    at.toggle(key="show_reference").set_value(False).run()
    assert not at.exception
    assert "No results store" in at.info[0].value and "bench run --suite synth4 --model pop" in at.code[0].value
    assert not at.dataframe and "Show reference runs" in at.caption[0].value  # the way back is offered
    at.toggle(key="show_reference").set_value(True).run()
    assert at.title[0].value == "Leaderboard" and not at.info

    at = _app(monkeypatch, f"sqlite:///{db}", reference="0")  # the link form, as the screenshots use it
    assert at.toggle(key="show_reference").value is False and "No results store" in at.info[0].value
    assert not db.exists()


def test_no_reference_folder_no_toggle(monkeypatch, tmp_path):
    at = _app(monkeypatch, f"sqlite:///{tmp_path / 'absent.db'}", reference="1")
    assert not at.toggle and "No results store" in at.info[0].value  # today's empty state
    assert "no reference runs at" in at.sidebar.warning[0].value


def test_reference_runs_beside_local_runs_are_separate_rows(monkeypatch, local_url, reference_folder):
    monkeypatch.setenv(reference.ENV, str(reference_folder))
    at = _app(monkeypatch, local_url)
    assert at.toggle(key="show_reference").value is False  # the user has runs: theirs alone by default
    text, _ = _styled(at)
    assert set(text.index) == {m for m, _ in LOCAL_SPEC.skill}

    at = _app(monkeypatch, local_url, reference="1")
    assert at.toggle(key="show_reference").value is True
    text, _ = _styled(at)
    local, ref = _plain_means(local_url, "mrr"), _plain_means(reference.reference_url(reference_folder), "mrr")
    assert set(text.index) == set(local) | {m + " (reference)" for m in ref}
    for model, mean in local.items():  # one seed each: no CI, the local run's own value
        assert text.loc[model, "mrr"] == f"{mean:.4f}"
    for model, mean in ref.items():  # two seeds of the reference, never pooled with the local seed
        assert text.loc[model + " (reference)", "mrr"].startswith(f"{mean:.4f} ± ")
    assert local["pop"] != ref["pop"]
    side = _sidebar_text(at)
    assert f"your store `{local_url}` ({len(local)} runs)" in side
    assert f"({len(REF_SPEC.skill) * 2 + 2} runs), marked `(reference)`" in side

    # significance against a local model marks local rows only, unless the other side is asked for
    at.selectbox(key="lb_against").set_value("sasrec").run()
    text, _ = _styled(at)
    assert text.loc["pop", "hr@10"].endswith("▼")  # 0.15 vs 0.40 hit rate on 150 users
    assert not text.loc["pop (reference)"].str.contains("▲|▼").any()
    assert any("compare each side only with its own runs" in c.value for c in at.caption)
    at.checkbox(key="lb_cross").check().run()
    text, _ = _styled(at)
    assert text.loc["pop (reference)", "hr@10"].endswith("▼")  # 0.12 vs 0.40, tested because asked
    assert not at.exception

    # ablations: a base's variants come from its own side only
    at.switch_page("app_pages/ablations.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="ab_base").value == "mllm-srec-qlora"
    assert set(at.dataframe[0].value["variant"]) == {"mllm-srec-image"}
    at.selectbox(key="ab_base").set_value("mllm-srec-qlora (reference)").run()
    assert not at.exception, [e.value for e in at.exception]
    assert set(at.dataframe[0].value["variant"]) == {"mllm-srec-text (reference)",
                                                     "mllm-srec-qlora (reference) [blank:0.5]"}

    at.switch_page("app_pages/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.header] == ["Your runs", "Reference runs"]
    assert [b.label for b in at.get("download_button")] == ["Markdown", "LaTeX", "HTML"] * 2


def test_screenshot_links_carry_the_reference_toggle(tmp_path):
    from mmsr_bench.dashboard import screenshots as ss

    page = {p.name: p for p in ss.PAGES}
    assert ss.page_query(page["runs"], reference=True) == "?reference=1"
    assert ss.page_query(page["leaderboard"], against="sasrec", reference=False) == "?against=sasrec&reference=0"
    assert ss.page_query(page["study"]) == ""
    # --reference with no folder of run files fails before any browser starts
    assert ss.main(["--db", f"sqlite:///{tmp_path / 'none.db'}", "--reference", "--reference-dir",
                    str(tmp_path / "absent"), "--out", str(tmp_path / "shots")]) == 1
    assert not (tmp_path / "shots").exists()


def test_md_code_keeps_user_text_inside_one_code_span():
    from mmsr_bench.dashboard import ui

    assert ui.md_code("sqlite:///a.db") == "`sqlite:///a.db`"
    assert ui.md_code("x`y") == "``x`y``"
    assert ui.md_code("`a``") == "``` `a`` ```"
    assert ui.md_code("a\nb") == "`a b`"


# ------------------------------------------------------------------------------------------------ helpers


def test_ablation_statistics_equal_significance_compare(fixture_url):
    store = Store(fixture_url)
    ab = compute(store, "synth4", "mllm-srec-qlora", prefix="mllm-srec-", metrics=["hr@10", "mrr"], test="wilcoxon")
    cells, notes = ab.cells, ab.notes
    assert notes == ()
    comp = compare(store, "mllm-srec-text", "mllm-srec-qlora", suite="synth4", dataset="toys",
                   metrics=["hr@10", "mrr"], test="wilcoxon", n_resamples=1000)
    mine = {c.metric: c for c in cells if c.dataset == "toys" and c.variant == "mllm-srec-text"}
    for row in comp.rows:
        assert mine[row.metric].p_corrected == row.p_corrected
        assert mine[row.metric].rel_change == row.rel_diff and mine[row.metric].significant == row.significant
    capped = compute(store, "synth4", "mllm-srec-qlora", prefix="mllm-srec-", metrics=["hr@10"], max_variants=0)
    notes = capped.notes
    assert {c.variant for c in capped.cells} == {"mllm-srec-qlora [blank:0.2]", "mllm-srec-qlora [blank:0.5]"}
    assert "the first 0 are shown" in notes[0]


def test_styled_board_keeps_each_cells_text_when_means_tie(fixture_url):
    import dataclasses

    board = build_board(Store(fixture_url), "synth4", ["beauty"], ["hr@10"])
    m0, m1 = board.models[:2]
    c0 = board.cells[(m0, "beauty", "hr@10")]
    board.cells[(m1, "beauty", "hr@10")] = dataclasses.replace(board.cells[(m1, "beauty", "hr@10")],
                                                                 mean=c0.mean, half_width=0.5)
    html = q.styled_board(board).to_html()
    assert f"{c0.mean:.4f} ± {c0.half_width:.4f}" in html and f"{c0.mean:.4f} ± 0.5000" in html


def test_readonly_url_and_state(tmp_path):
    db = tmp_path / "r.db"
    url = f"sqlite:///{db}"
    assert q.readonly_url(url) == f"sqlite:///file:{db}?mode=ro&uri=true"
    assert q.readonly_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert q.store_state(url) == "missing"
    Store(url)
    assert q.store_state(url) == "empty"
    Store(url).add_run(Run(group_id="g", suite="s", suite_hash="h", dataset="d", model="m"))
    assert q.store_state(url) == "ready"
    with pytest.raises(Exception):  # mode=ro: a write through the dashboard's store fails
        q.open_store(url).add_run(Run(group_id="g", suite="s", suite_hash="h", dataset="d", model="m"))
    assert len(Store(url).runs()) == 1


def test_small_parsers():
    assert q.family_prefix("mllm-srec-qlora") == "mllm-srec-"
    assert q.family_prefix("sasrec") == "sasrec-"
    assert q.parse_variant("blank:0.2") == ("blank", 0.2)
    assert q.parse_variant("swap:.5") == ("swap", 0.5)
    assert q.parse_variant("") is None and q.parse_variant("lora-r16") is None
    assert q.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": "[1, 2]", "d": "{}"}


def test_parse_hallucination_names_artifact_and_field():
    art = Artifact(id=7, suite="s", dataset="d", model="m", kind="hallucination",
                   payload_json=json.dumps({"dataset": "d", "distances": [0.1, 0.5], "threshold": 0.4,
                                            "flagged_share": 0.5, "auroc": None}))
    p = q.parse_hallucination(art)
    assert p.distances == (0.1, 0.5) and p.mismatched == () and p.auroc is None
    art.payload_json = json.dumps({"dataset": "d", "distances": [0.1], "flagged_share": 0.5})
    with pytest.raises(BenchError, match=r"artifact 7 .*'threshold'"):
        q.parse_hallucination(art)
    art.payload_json = "{not json"
    with pytest.raises(BenchError, match="not JSON"):
        q.parse_hallucination(art)


def test_launch_command_is_loopback_headless_and_checks_the_port():
    cmd = dashboard.streamlit_command(8599)
    joined = " ".join(cmd)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("mmsr_bench/dashboard/app.py")
    for flag in ("--server.headless true", "--server.address 127.0.0.1", "--server.port 8599",
                 "--browser.gatherUsageStats false"):
        assert flag in joined
    with pytest.raises(BenchError, match="--port 0"):
        dashboard.launch(None, 0)


def test_configuration_field_keeps_list_values_whole():
    from mmsr_bench.dashboard.ui import split_sets

    text = ("mllm-srec*:max_pairs=1200, backbone=smollm2-135m,tallrec:target_modules=q_proj,k_proj,v_proj,"
            "tallrec:lr=0.001")
    assert split_sets(text) == ["mllm-srec*:max_pairs=1200", "backbone=smollm2-135m",
                                "tallrec:target_modules=q_proj,k_proj,v_proj", "tallrec:lr=0.001"]
    assert split_sets("") == [] and split_sets("a=1,b=2") == ["a=1", "b=2"]

"""MLLM-SRec commands for the ``bench`` app: ``bench hallucination`` and ``bench report ablations``.

:func:`register` is called by :mod:`mmsr_bench.cli.main`; the shared helpers (``fail``, ``_print_table``, ``console``,
``_setup``, ``DB_OPTION``) are imported inside the functions to avoid an import cycle.
"""

from __future__ import annotations

import json
from typing import Optional

import typer


def hallucination_payloads(suite: str, model: str, datasets: list[str] | None, seed: int = 0,
                           clip_steps: int = 200, space: str = "lit",
                           overrides: dict[str, str] | None = None) -> list[dict]:
    """Caption every item with the model's VLM (cached), then score captions with CLIP (see
    mmsr_bench.results.hallucination). ``overrides`` are the model's ``--set`` pairs, e.g. ``vlm=effnet-smollm2``
    to analyse the captioner a run used."""
    from mmsr_bench.models import adapter
    from mmsr_bench.models.toolkits.captioner import load_vlm
    from mmsr_bench.models.toolkits.vlm import TinyVLMSpec, caption_items
    from mmsr_bench.paths import auto_device
    from mmsr_bench.models.toolkits.image_text_space import embed_pairs
    from mmsr_bench.models.toolkits.tiny_clip import ClipTrainSpec
    from mmsr_bench.results.hallucination import analyse, usable_items
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    spec = suites.load_suite(suite)
    reg = adapter.get(model)
    cfg = adapter.build(model, overrides, seed=seed).config
    if not hasattr(cfg, "vlm"):
        from mmsr_bench.errors import BenchError

        raise BenchError(f"model {model!r} has no captioning VLM (hallucination analysis is for mllm-srec variants)")
    out = []
    for d in spec.select(",".join(datasets) if datasets else None):
        data = build.load(spec, d.name)
        f = data.items.frame
        if not data.items.has("image"):
            from mmsr_bench.errors import MissingModality

            raise MissingModality(f"{suite}/{d.name} has no item images: run `bench data images --suite {suite}`")
        paths = [p if isinstance(p, str) and p and not p.startswith(("http://", "https://")) else None
                 for p in f["image"]]
        refs = list(f["image_description"]) if "image_description" in f.columns else None
        vlm = load_vlm(cfg.vlm, image_paths=[p or "" for p in paths], descriptions=refs or [None] * len(paths),
                       keys=[str(k) for k in f["ext_id"]],
                       spec=TinyVLMSpec(train_steps=cfg.vlm_steps, holdout=cfg.vlm_holdout),
                       device=auto_device(None), allow_hub=cfg.allow_hub)
        caps, _ = caption_items(vlm, paths, max_new_tokens=cfg.caption_tokens)
        keep = usable_items(d.name, paths, caps)  # the space is built by the models stage, measured in by results
        paths, caps = [paths[i] for i in keep], [caps[i] for i in keep]
        refs = [refs[i] for i in keep] if refs is not None else None
        pairs = embed_pairs(d.name, paths, caps, refs, clip_spec=ClipTrainSpec(steps=clip_steps, seed=seed),
                            seed=seed, space=space)
        payload = analyse(d.name, pairs, caps, refs, seed=seed)
        payload.update({"model": reg.name, "variant": model, "suite": suite, "overrides": dict(overrides or {}),
                        **vlm.run_info()})
        out.append(payload)
    return out


def register(app: typer.Typer) -> None:
    """Add ``hallucination`` and ``report ablations`` to the bench app."""
    from mmsr_bench.cli.common import DB_OPTION

    report_app = typer.Typer(help="Analysis reports over stored runs.", no_args_is_help=True)
    app.add_typer(report_app, name="report")

    @app.command("hallucination")
    def hallucination(
        suite: str = typer.Option(..., "--suite", "-s"),
        model: str = typer.Option("mllm-srec-qlora", "--model", "-m", help="An mllm-srec variant (its VLM captions)."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Comma-separated datasets (default: all)."),
        clip_steps: int = typer.Option(200, "--clip-steps", help="Contrastive steps of the tiny CLIP (--space tiny-clip)."),
        space: str = typer.Option("lit", "--space", help="lit (frozen EfficientNet-Lite0 + MiniLM, trained heads) | "
                                                         "tiny-clip (a small open_clip trained from scratch)."),
        set_: list[str] = typer.Option([], "--set", help="The model's config override key=value (repeatable), e.g. "
                                                         "vlm=effnet-smollm2 for the captioner a run used."),
        db: Optional[str] = DB_OPTION,
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Image-caption distances of the generated captions in a shared image-text space, thresholded on ground
        truth where it exists; stored as artifacts."""
        import numpy as np

        from mmsr_bench.cli.common import _print_table, _setup, console, fail
        from mmsr_bench.errors import BenchError
        from mmsr_bench.results.store import Artifact, Store

        _setup(verbose)
        try:
            from mmsr_bench.models import adapter

            if space not in ("lit", "tiny-clip"):
                raise BenchError(f"--space {space!r}: choose lit or tiny-clip")
            overrides = adapter.parse_set_options(set_)
            payloads = hallucination_payloads(suite, model, [x.strip() for x in dataset.split(",")] if dataset else None,
                                              clip_steps=clip_steps, space=space, overrides=overrides)
            store = Store(db)
            ids = []
            for p in payloads:
                art = store.add_artifact(Artifact(kind="hallucination", suite=suite, dataset=p["dataset"], model=model,
                                                  payload_json=json.dumps(p)))
                ids.append(art.id)
        except BenchError as exc:
            fail(str(exc))
            return
        rows = []
        for p in payloads:
            d, m = np.asarray(p["distances"]), np.asarray(p["mismatched"])
            auroc = "-" if p.get("auroc") is None else f"{p['auroc']:.3f}"
            rows.append([p["dataset"], str(p["n_items"]), f"{d.mean():.3f} ± {d.std():.3f}",
                         f"{np.median(d):.3f}", f"{m.mean():.3f} ± {m.std():.3f}", f"{p['threshold']:.3f}",
                         f"{p['flagged_share']:.1%}", str(p.get("contradicting", "-")), auroc])
        _print_table(["dataset", "captions", "distance mean±sd", "median", "mismatched mean±sd", "threshold",
                      "flagged", "contradicting", "AUROC"], rows,
                     title=f"caption hallucination of {model} on {suite} (1 - cosine in the image-text space)")
        console.print(f"[dim]threshold: {payloads[0]['threshold_rule']}; AUROC separates captions contradicting the "
                      f"reference colour/shape. Space: {payloads[0]['clip']}, trained on "
                      f"{payloads[0]['clip_trained_on'] or 'checkpoint'}. Stored artifacts {ids}.[/dim]")

    @report_app.command("ablations")
    def ablations(
        suite: str = typer.Option(..., "--suite", "-s"),
        base: str = typer.Option("mllm-srec-qlora", "--base", help="The reference model of the relative changes."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
        metric: Optional[str] = typer.Option(None, "--metric", help="Comma-separated metrics."),
        extra: Optional[str] = typer.Option(None, "--with", help="Other models to include (comma-separated)."),
        test: str = typer.Option("t", "--test"),
        correction: str = typer.Option("holm", "--correction"),
        alpha: float = typer.Option(0.05, "--alpha"),
        format: str = typer.Option("table", "--format", "-f", help="table | markdown | latex"),
        db: Optional[str] = DB_OPTION,
    ) -> None:
        """One row per variant, one column per metric: value, change over --base, significance marker."""
        from mmsr_bench.cli.common import _print_table, _setup, console, fail
        from mmsr_bench.errors import BenchError
        from mmsr_bench.results import ablations as ar
        from mmsr_bench.results.store import Store

        _setup()
        if format not in ("table", "markdown", "latex"):
            fail(f"--format {format!r}: expected table, markdown or latex")
        try:
            table = ar.build(Store.for_reading(db), suite, base, datasets=[d.strip() for d in dataset.split(",")] if dataset else None,
                             metrics=[m.strip() for m in metric.split(",")] if metric else None, test=test,
                             correction=correction, alpha=alpha,
                             extra=tuple(x.strip() for x in extra.split(",")) if extra else ())
        except BenchError as exc:
            fail(str(exc))
            return
        if format == "markdown":
            print(ar.to_markdown(table))
        elif format == "latex":
            print(ar.to_latex(table))
        else:
            header, rows = ar.to_rows(table)
            _print_table(header, rows, title=f"MLLM-SRec ablations on {suite} (base {base})")
            console.print(f"[dim]{table.footer}[/dim]")

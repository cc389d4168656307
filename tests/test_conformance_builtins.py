"""Every built-in model in the catalog passes the conformance kit at its tiny budget (each adapter class's conformance_overrides).

The cheap ones (pop, random, SASRec, BERT4Rec, GPTRec: 20 s together, measured on 2 shared cores) run by default.
The others are marked slow (deselect with -m 'not slow'); measured alone on the same machine: GPTRec-SVD 29 s,
MMGCN 27 s and MMSR 31 s (random CLIP), MMSR-text 61 s, MMGCN-text 84 s, tiny-backbone TALLRec 84 s,
MLLM-SRec-text 478 s; MLLM-SRec-QLoRA (4-bit on CPU) did not finish in 600 s.
"""

from __future__ import annotations

import pytest

from mmsr_bench.models import adapter, conformance

#: Run by default; every other catalog entry is slow.
CHEAP = {"pop", "random", "sasrec", "bert4rec", "gptrec"}


def _param(name: str):
    return pytest.param(name, id=name, marks=() if name in CHEAP else pytest.mark.slow)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return conformance.make_suite(tmp_path_factory.mktemp("kit"))


@pytest.mark.parametrize("name", [_param(n) for n in adapter.catalog()])
def test_builtin_adapter_conforms(kit, name):
    results = conformance.run_checks(name, kit=kit)
    failed = [f"{r.name}: {r.reason}" for r in results if not r.passed]
    assert not failed, failed


def test_the_cheap_set_is_in_the_catalog():
    assert CHEAP <= set(adapter.catalog())


def test_every_trained_builtin_gets_a_tiny_budget():
    """Variants registered on a family's class (mllm-srec-*, mmgcn-text, mmsr-text) find their family's entry: a
    silent empty budget would fit them at their full default budget in the kit and in `bench study --budget tiny`."""
    untrained = {"pop", "random"}
    empty = [n for n in adapter.catalog() if n not in untrained and not conformance.tiny_overrides(n)]
    assert not empty, empty
    assert conformance.tiny_overrides("mllm-srec-text")["max_pairs"] == "16"

"""Run identities stay put: the configuration hash of every built-in model at its defaults is pinned, and every
stored reference run's configuration rebuilds its recorded hash with this version of the code. A field added to a
configuration later (``adapter.later_field``) is left out of the identity at its default, so runs made before it
existed keep theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsr_bench.models import adapter
from mmsr_bench.results.run_files import read_files
from mmsr_bench.runner.reproduce import recorded_overrides

#: sha256 of each built-in model's default configuration, as computed at commit 55b006d (before any later_field).
PINNED = {
    "bert4rec": "29ea39fcb630c9e2fe327df99294bf10388f4d4899a6db40758491a5aa23e236",
    "gptrec": "226a54e6e083e14284de5d4e0855faac94f0664d07b1ea3cba2eb5c14ae58898",
    "gptrec-svd": "1677625e89a70c88074072a8cbd055d90866474a57161db8ea59a735daf7bb43",
    "mllm-srec-base": "e9a6d3e5a011793c306d9ed5fa1afc953acf619a1fd3d885e03d5d30ebc94eab",
    "mllm-srec-image": "3096559437c904b161e770b299dbd10e5cfcdf4c6b73d26d15ebfc168f32b514",
    "mllm-srec-lora": "a7f7a47f044a4f6d186f27f65d4863a4305441d3582a0e9f36d775c2e38ce210",
    "mllm-srec-lora-cot": "66a5fb924225539c55805591c19141eb0f4d5a0ef2e9e64695686ee78c02c918",
    "mllm-srec-qlora": "d75e957fde299536dbf1c86f2ef0d747286b80b52b313c810057ef476ba4f0d2",
    "mllm-srec-qlora-cot": "ddd8d34ae2cda8e42617aa99f103fc248cc7d1f76b4151cd2d151b4b3573f7dd",
    "mllm-srec-sv": "425ebefcf2a9b2141fd6ed7830bbd2b5cf4aa1fdb02b806ecf51f1b090b4a619",
    "mllm-srec-svi": "2d14465bb0f743945cabd2ca8ba6ab3b5d608b864816de0e4fb6db47fd69801e",
    "mllm-srec-text": "167750fb8702ebc5a7bc9a68ae5696723d4c7acce3ebe4677cc9deaf8d54e98d",
    "mmgcn": "237ecc8b4975baa4e1301193eda5e49e4ba76e8e024475ccb0ba4a726f7a3189",
    "mmgcn-text": "647c65e68e3e7eea2d04aa9124d0e451f9c1ad88ae4cb5d42d5789bd5c32a98a",
    "mmsr": "3b501fcd6c2d6c3ea684273b94bd583ee7bbfa2fa8c6b2c8b7d6efcbc78bf338",
    "mmsr-text": "4875f01b0473c5658edb5ebb5487dd110f81085a20e603709d529f690dcca0fa",
    "pop": "0db0061bbf55211b6ca1e4d78d798e7925b3a5ebfc60105ba366f0bf1767a4d5",
    "random": "0db0061bbf55211b6ca1e4d78d798e7925b3a5ebfc60105ba366f0bf1767a4d5",
    "sasrec": "91740084fe67ca0d394949f4ab4cf02974d6de1fd8f367961465a5f2bd016604",
    "tallrec": "1a45b735278daa8e32f1d466c56fc44618fc9264286f5cf4b33dc0c2f6a93393",
}

REFERENCE = Path(__file__).resolve().parents[1] / "reference-runs"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_default_configuration_hashes_are_pinned(name):
    assert adapter.config_hash(adapter.build(name)) == PINNED[name]


def test_every_built_in_model_is_pinned():
    assert set(adapter.catalog()) == set(PINNED)  # a new built-in model adds its pin here


def test_every_reference_run_rebuilds_its_recorded_configuration():
    records, _ = read_files(REFERENCE)
    assert records
    for rec in records:
        recorded_overrides(rec.run)  # raises naming the run when the hash differs


def test_a_later_field_is_in_the_identity_only_away_from_its_default():
    for name in ("tallrec", "mllm-srec-qlora"):
        default, chat = adapter.build(name), adapter.build(name, {"chat_template": "auto"})
        assert "chat_template" not in adapter.config_dict(default)
        assert adapter.config_dict(chat)["chat_template"] == "auto"
        assert adapter.config_hash(chat) != adapter.config_hash(default) == PINNED[name]
        run = type("R", (), {"uuid": "u", "model": name, "config_json": json.dumps(adapter.config_dict(chat)),
                             "config_hash": adapter.config_hash(chat)})()
        assert recorded_overrides(run) == {"chat_template": "auto"}

"""Image perturbations: parsing, determinism, the share changed, blank is blank, swap is a derangement."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsr_bench.data import perturb
from mmsr_bench.data.splits import ItemTable
from mmsr_bench.errors import BenchError


def _items(tmp_path, n=20) -> ItemTable:
    rows = []
    for i in range(1, n + 1):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (16, 16), (10 * i, 255 - 10 * i, (37 * i) % 256)).save(p)
        rows.append({"item": i, "title": f"t{i}", "image": str(p)})
    return ItemTable(pd.DataFrame(rows).set_index("item", drop=False))


def _digest(path) -> str:
    with Image.open(path) as im:
        return hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest()


def test_parse():
    assert perturb.parse("blank:0.2") == perturb.Perturbation("blank", 0.2)
    assert perturb.parse("swap:1").share == 1.0
    for bad in ("blur:0.2", "blank", "noise:x", "noise:0", "swap:1.5"):
        with pytest.raises(BenchError):
            perturb.parse(bad)


@pytest.mark.parametrize("kind", ["blank", "noise", "swap"])
def test_share_and_determinism(tmp_path, kind):
    items = _items(tmp_path)
    a = perturb.apply_to_items(items, f"{kind}:0.25", seed=3, out_dir=tmp_path / "a")
    b = perturb.apply_to_items(items, f"{kind}:0.25", seed=3, out_dir=tmp_path / "b")
    changed = [i for i in items.frame.index if a.frame.at[i, "image"] != items.frame.at[i, "image"]]
    assert len(changed) == 5  # round(0.25 * 20)
    assert changed == [i for i in items.frame.index if b.frame.at[i, "image"] != items.frame.at[i, "image"]]
    assert all(_digest(a.frame.at[i, "image"]) == _digest(b.frame.at[i, "image"]) for i in changed)
    c = perturb.apply_to_items(items, f"{kind}:0.25", seed=4, out_dir=tmp_path / "c")
    assert [i for i in items.frame.index if c.frame.at[i, "image"] != items.frame.at[i, "image"]] != changed
    # originals untouched
    assert all(str(tmp_path) in items.frame.at[i, "image"] and "/a/" not in items.frame.at[i, "image"]
               for i in items.frame.index)
    orig = {i: _digest(items.frame.at[i, "image"]) for i in changed}
    new = {i: _digest(a.frame.at[i, "image"]) for i in changed}
    if kind == "blank":
        for i in changed:
            with Image.open(a.frame.at[i, "image"]) as im:
                arr = np.asarray(im.convert("RGB"))
            assert arr.shape == (16, 16, 3) and (arr == perturb.BLANK_VALUE).all()
    elif kind == "noise":
        assert all(new[i] != orig[i] for i in changed)
    else:  # a permutation of the chosen items' images without fixed points
        assert sorted(new.values()) == sorted(orig.values())
        assert all(new[i] != orig[i] for i in changed)

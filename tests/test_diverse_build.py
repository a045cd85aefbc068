"""End to end through a real local Ray: a zoo of sampled architectures on a grid and a sampled
plane, with landscape metrics per (cell, architecture) group; rows rebuild with zoo.load_model,
`datasets` reads them, the card counts the architectures, and the hypernet's cell loader sees one
cell per group."""
from __future__ import annotations

import json

import datasets
import pytest
import torch

import zoo
from pipelines.zoodata import load_cells
from tests.conftest import tiny_spec, write_spec
from tests.test_build import zoo_cmd
from tests.test_sampling import random_spec
from zoo import store

pytestmark = pytest.mark.slow

SPACE = {"depth": [1, 2, 3], "activation": ["relu", "gelu"], "residual": [False, True], "norm": ["none", "layernorm"]}
DEEP = tiny_spec("tiny_deep", axes={"temperature": {"param": "lr", "values": [0.02, 0.1]},
                                    "load": {"param": "data_fraction", "values": [0.5]}},
                 model={"family": "mlp", "width": 8}, architectures={"count": 3, "seed": 0, "space": SPACE},
                 compute={"bundle_members": 8},
                 metrics={"hessian": {"batches": 1, "batch_size": 64, "max_iter": 5, "probes": 5},
                          "cka": {"samples": 100}, "connectivity": {"epochs": 1, "points": 3}})
SAMPLED = random_spec(4, metrics=DEEP["metrics"], compute={"bundle_members": 16})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("diverse")
    out = d / "phases"
    for spec, phase in ((DEEP, "grid"), (SAMPLED, "random")):
        path = write_spec(d / f"{spec['name']}.yaml", spec)
        r = zoo_cmd("build", "--phase", phase, "--config", str(path), "--out", str(out), "--workers", "2")
        assert r.returncode == 0, r.stderr
    return out


def test_rows_carry_arch_and_rebuild(built):
    ds = datasets.load_dataset(str(built), "tiny_deep", split="train")
    assert len(ds) == 3 * 2 * 2 * len(DEEP["checkpoints"])  # archs x cells x seeds x checkpoints
    archs = {r["arch_id"]: json.loads(r["arch"]) for r in ds}
    assert len(archs) == 3
    for aid, arch in archs.items():
        assert zoo.spec.arch_id(arch) == aid and arch["width"] == 8
    for r in ds.filter(lambda r: r["epoch"] == DEEP["training"]["epochs"]):
        model = zoo.load_model(r)
        ev = zoo.evaluate(model, r)
        assert ev["test_acc"] == pytest.approx(r["test_acc"], abs=1e-6)
        assert r["cell"] == f"{'T0L0' if r['lr'] == 0.02 else 'T1L0'}-{r['arch_id']}"
    W = zoo.open(str(built), "tiny_deep").filter(lambda r: r["arch_id"] == next(iter(archs)))["weights"][:]
    assert isinstance(W, torch.Tensor) and W.ndim == 2 and W.shape[0] == 2 * 2 * len(DEEP["checkpoints"])


def test_every_group_gets_metrics_and_a_phase(built):
    cells = datasets.load_dataset(str(built), "tiny_deep_cells", split="train")
    assert len(cells) == 3 * 2
    assert all(c["n_pairs"] == 1 and c["phase"] in ("I", "II", "III", "IV-A", "IV-B") for c in cells)
    assert {c["cell"].split("-")[1] for c in cells} == {c["arch_id"] for c in cells}
    manifest = store.read_manifest(built)
    z = manifest["zoos"]["tiny_deep"]
    assert z["architectures"] == 3 and z["cells"] == 6 and sum(z["phases"].values()) == 6
    card = (built / "README.md").read_text()
    assert "| tiny_deep |" in card and "| 3 (sampled) |" in card
    s = manifest["zoos"]["sampled"]
    assert s["spec"]["phase"] == "random" and s["cells"] == len(store.cell_files(built, "sampled"))
    assert "sobol points" in card
    assert (built / "figures" / "sampled-phases.png").exists() and (built / "figures" / "tiny_deep-phases.png").exists()
    assert zoo_cmd("verify", str(built)).returncode == 0


def test_hypernet_cells_are_the_groups(built):
    cells = load_cells(built, ["tiny_deep"])
    assert len(cells) == 6 and len({c.cell for c in cells}) == 6
    for c in cells:
        assert len(c.rows) == 2 and len(c.states(built)) == 2
        net = c.build()
        assert set(net.state_dict()) == set(c.states(built)[0])

"""Where bundles train: compute.device / --device (auto | cpu | cuda), Ray GPU shares, and a
population on a device. The CPU tests cover the placement logic; the CUDA ones run where a GPU is."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pipelines.build import gpu_share, place
from tests.conftest import tiny_spec, write_spec
from tests.reference import assert_oracle_equal, plain_train
from zoo import tasks
from zoo.errors import ZooError
from zoo.machine import resolve_device
from zoo.spec import Collection, parse_spec
from zoo.train import MemberConfig, Population

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("has_cuda", [False, True])
def test_auto_is_cuda_exactly_when_torch_sees_a_gpu(monkeypatch, has_cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    assert resolve_device("auto") == ("cuda" if has_cuda else "cpu")
    assert resolve_device("cpu") == "cpu"
    if has_cuda:
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(ZooError, match=r"^x\.yaml: compute\.device: 'cuda' requested, but torch .* sees no GPU"
                                           r" \(.*\); valid here: auto, cpu$"):
            resolve_device("cuda", "x.yaml: compute.device")
    with pytest.raises(ZooError, match="'tpu' is not a device; valid: auto, cpu, cuda"):
        resolve_device("tpu")


def test_spec_device_fields_are_validated_and_are_not_part_of_the_models():
    with pytest.raises(ZooError, match=r"compute\.device: Input should be 'auto', 'cpu' or 'cuda'"):
        parse_spec(tiny_spec(compute={"device": "gpu"}))
    for bad in (0, 1.5):
        with pytest.raises(ZooError, match=r"compute\.gpus_per_worker"):
            parse_spec(tiny_spec(compute={"gpus_per_worker": bad}))
    cpu, gpu = parse_spec(tiny_spec(compute={"device": "cpu"})), parse_spec(tiny_spec(compute={"device": "cuda"}))
    # placement does not change what the models are: same model ids, same training digest (a build resumes
    # on another device)
    assert cpu.training_json() == gpu.training_json()
    assert [m.model_id for m in cpu.members()] == [m.model_id for m in gpu.members()]


def test_place_resolves_overrides_and_asks_ray_for_gpu_shares(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    specs = [parse_spec(tiny_spec("a")), parse_spec(tiny_spec("b", compute={"device": "cpu", "gpus_per_worker": 0.25}))]
    place(Collection("c", specs))
    assert [s.compute.device for s in specs] == ["cuda", "cpu"]
    assert gpu_share(specs[0].compute) == 1.0 and gpu_share(specs[1].compute) == 0.0
    place(Collection("c", specs), device="cuda")  # --device overrides every spec
    assert [s.compute.device for s in specs] == ["cuda", "cuda"] and gpu_share(specs[1].compute) == 0.25
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ZooError, match="^--device: 'cuda' requested"):
        place(Collection("c", [parse_spec(tiny_spec())]), device="cuda")
    with pytest.raises(ZooError, match="^zoo a: compute.device: 'cuda' requested"):
        place(Collection("c", [parse_spec(tiny_spec("a", compute={"device": "cuda"}))]))
    on_cluster = [parse_spec(tiny_spec("a", compute={"device": "cuda"}))]
    place(Collection("c", on_cluster), address="127.0.0.1:6379")  # the cluster's GPUs; nothing is contacted
    assert on_cluster[0].compute.device == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_build_on_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", tiny_spec())
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(spec), "--out", str(out),
                        "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("zoo: error: --device: 'cuda' requested") and "valid here: auto, cpu" in r.stderr
    assert not out.exists()


def test_population_on_the_cpu_device_is_the_default_population():
    task = tasks.load("mnist1d")
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 128, "epochs": 1, "data_fraction": 0.25}
    members = [MemberConfig("a", 0, 0.05), MemberConfig("b", 1, 0.1, weight_decay=1e-3)]
    arch = {"family": "mlp", "width": 16, "depth": 2}
    a = Population(task, arch, "kaiming_uniform", common, members).fit([1])
    b = Population(task, arch, "kaiming_uniform", common, members, device=torch.device("cpu")).fit([1])
    for ra, rb in zip(a, b):
        assert ra.curves == rb.curves
        assert all((ra.checkpoints[1]["state"][k] == v).all() for k, v in rb.checkpoints[1]["state"].items())


@needs_cuda
@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_population_on_cuda_equals_the_float64_oracle(family):
    task = tasks.load("mnist1d")
    arch = {"family": family, "width": 8 if family == "cnn" else 16, "depth": 2}
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "epochs": 2, "data_fraction": 0.1}
    members = [MemberConfig("a", 0, 0.05, weight_decay=1e-3), MemberConfig("b", 1, 0.1, label_noise=0.2)]
    pop = Population(task, arch, "kaiming_uniform", common, members, dtype=torch.float64, device="cuda")
    assert pop.params[next(iter(pop.params))].device.type == "cuda"
    pop.train_epoch(1)
    pop.train_epoch(2)
    for i, m in enumerate(members):
        assert_oracle_equal(plain_train(task, arch, "kaiming_uniform", common, m).state_dict(), pop.member_state(i),
                            f"cuda member {m.model_id}")


@needs_cuda
def test_fit_on_cuda_records_cpu_checkpoints_and_metrics():
    task = tasks.load("mnist1d")
    common = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 128, "epochs": 1, "data_fraction": 0.25}
    members = [MemberConfig("a", 0, 0.05)]
    arch = {"family": "mlp", "width": 16, "depth": 2}
    res = Population(task, arch, "kaiming_uniform", common, members, device="cuda").fit([0, 1])[0]
    cpu = Population(task, arch, "kaiming_uniform", common, members).fit([0, 1])[0]
    assert res.checkpoints[0]["metrics"] == pytest.approx(cpu.checkpoints[0]["metrics"], rel=1e-4)
    assert all(type(v).__module__ == "numpy" for v in res.checkpoints[1]["state"].values())
    assert abs(res.checkpoints[1]["metrics"]["test_acc"] - cpu.checkpoints[1]["metrics"]["test_acc"]) < 0.05

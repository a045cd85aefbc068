"""The machine block that manifest.json and results.json carry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo.machine import cpu_model, machine_info


def test_machine_info_names_cpu_torch_and_threads():
    info = machine_info(torch_threads=3)
    assert set(info) == {"cpu", "cores", "platform", "torch", "cpu_capability", "torch_threads"}
    assert info["torch"] == torch.__version__ and info["torch_threads"] == 3
    assert info["cpu"] == cpu_model() and info["cpu"] and info["cores"] >= 1
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine_info()["torch_threads"] == torch.get_num_threads()
    assert json.loads(json.dumps(info)) == info  # plain JSON


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo on this OS")
def test_cpu_model_reads_proc_cpuinfo():
    with open("/proc/cpuinfo") as f:
        names = {line.split(":", 1)[1].strip() for line in f if line.lower().startswith("model name")}
    assert cpu_model() in names

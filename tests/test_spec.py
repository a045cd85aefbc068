"""ZooSpec loading, model ids, one-line user errors, and the CLI's handling of user mistakes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.errors import ZooError
from zoo.spec import default_config_path, load_config, load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent
PHASES = REPO / "configs" / "phases.yaml"
DEFAULT = REPO / "configs" / "default.yaml"
MLP_MNIST1D = REPO / "configs" / "zoos" / "mlp_mnist1d.yaml"


def _base() -> dict:
    return yaml.safe_load(MLP_MNIST1D.read_text())


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _ids(spec) -> list[str]:
    return [m.model_id for m in spec.members()]


def _load_error(path: Path) -> str:
    with pytest.raises(ZooError) as ei:
        load_spec(path)
    msg = str(ei.value)
    assert "\n" not in msg, f"error should be one line: {msg!r}"
    assert str(path) in msg, f"error should name the file: {msg!r}"
    return msg


# ---- the shipped configs ---------------------------------------------------------------------
def test_default_collection_loads():
    assert default_config_path().resolve() == DEFAULT.resolve()
    col = load_config(default_config_path())
    assert col.name == "phases"
    assert [z.name for z in col.zoos] == ["mlp_mnist1d", "deepnets_small"]
    mlp, deep = col.zoos
    t, l = mlp.axes.temperature, mlp.axes.load
    assert len(t.values) >= 5 and len(l.values) >= 5 and len(mlp.seeds) >= 3
    assert len(mlp.cells()) == len(t.values) * len(l.values)
    assert len(mlp.members()) == len(mlp.cells()) * len(mlp.seeds)
    # the small architecture-diverse zoo: more than one depth, and seeds enough for the metrics
    assert len({a["depth"] for a in deep.archs()}) >= 3 and len(deep.seeds) >= 2
    assert len(deep.members()) == len(deep.cells()) * len(deep.archs()) * len(deep.seeds)


def test_phases_collection_has_every_family():
    col = load_config(PHASES)
    assert col.name == "phases"
    assert {z.model.family for z in col.zoos} == {"mlp", "resnet", "vit", "gpt", "pinn"}
    by_name = {z.name: z for z in col.zoos}
    assert by_name["pinn_convection"].axes.load.param == "beta"
    assert by_name["pinn_convection"].axes.temperature.param == "lr"
    for spec in col.zoos:
        t, l = spec.axes.temperature, spec.axes.load
        assert len(t.values) >= 4 and len(l.values) >= 4 and len(spec.seeds) >= 3
        if l.param == "beta":  # the load is a task argument: every cell's models carry it
            for m in spec.members():
                assert m.task_args["beta"] == m.cell.load


def test_task_argument_axis_errors(tmp_path):
    spec = yaml.safe_load((REPO / "configs" / "zoos" / "pinn_convection.yaml").read_text())
    spec["axes"]["load"]["param"] = "gamma"
    msg = _load_error(_write(tmp_path / "p.yaml", spec))
    assert "gamma" in msg and "beta" in msg and "width" in msg
    spec = _base()
    spec["task_args"] = {"beta": 2.0}
    msg = _load_error(_write(tmp_path / "m.yaml", spec))
    assert "task_args" in msg and "mnist1d" in msg


def test_default_zoo_spec_plane():
    spec = load_spec(MLP_MNIST1D)
    assert spec.name == "mlp_mnist1d" and spec.task == "mnist1d" and spec.model.family == "mlp"
    assert spec.axes.temperature.param == "batch_size" and spec.axes.load.param == "width"
    members = spec.members()
    assert len(members) == 5 * 5 * 3
    # plan order: cell-major, then seed; the cell's axis values are applied to the member
    m0 = members[0]
    assert m0.seed == spec.seeds[0] and m0.cell.id == "T0L0"
    assert m0.training["batch_size"] == spec.axes.temperature.values[0]
    assert m0.arch["width"] == spec.axes.load.values[0] and isinstance(m0.arch["width"], int)
    assert m0.arch["depth"] == 2
    last = members[-1]
    assert last.cell.id == "T4L4" and last.seed == spec.seeds[-1]
    assert last.training["batch_size"] == spec.axes.temperature.values[-1]
    assert last.arch["width"] == spec.axes.load.values[-1]
    # the last epoch is the default metrics epoch
    assert spec.metrics.epoch == spec.training.epochs


# ---- model ids -------------------------------------------------------------------------------
def test_model_ids_stable_and_unique():
    a, b = load_spec(MLP_MNIST1D), load_spec(MLP_MNIST1D)
    ids = _ids(a)
    assert ids == _ids(b)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


def test_model_ids_do_not_depend_on_file_path_or_key_order(tmp_path):
    ref = _ids(load_spec(MLP_MNIST1D))

    def reverse(d):
        return {k: reverse(v) for k, v in reversed(list(d.items()))} if isinstance(d, dict) else d

    data = reverse(_base())
    assert list(data)[0] != list(_base())[0]  # the order really changed
    p = tmp_path / "other_name.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _ids(load_spec(p)) == ref


def test_model_ids_survive_the_saved_spec():
    """The full spec saved with results (to_json) re-parses to the same model ids."""
    spec = load_spec(MLP_MNIST1D)
    assert _ids(parse_spec(spec.to_json())) == _ids(spec)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["training"].update(lr=0.01),
        lambda d: d["training"].update(weight_decay=0.001),
        lambda d: (d["training"].update(epochs=25), d.update(checkpoints=[0, 5, 25])),
        lambda d: d["model"].update(depth=3),
        lambda d: d.update(name="mlp_mnist1d_v2"),
    ],
    ids=["lr", "weight_decay", "epochs", "depth", "zoo_name"],
)
def test_model_ids_change_with_hyperparameters_and_zoo_name(tmp_path, change):
    ref = _ids(load_spec(MLP_MNIST1D))
    data = _base()
    change(data)
    new = _ids(load_spec(_write(tmp_path / "z.yaml", data)))
    assert len(new) == len(ref)
    assert all(a != b for a, b in zip(ref, new))
    assert not set(ref) & set(new)


def test_model_ids_ignore_description_and_bundling(tmp_path):
    """Reruns find finished work: things that do not change training keep the ids."""
    data = _base()
    data["description"] = "something else"
    data["compute"] = {"max_members": 7}
    assert _ids(load_spec(_write(tmp_path / "z.yaml", data))) == _ids(load_spec(MLP_MNIST1D))


# ---- errors ----------------------------------------------------------------------------------
def test_unknown_top_level_field(tmp_path):
    data = _base()
    data["colour"] = "blue"
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "colour" in msg and "unknown field" in msg


def test_unknown_top_level_field_lists_valid_fields(tmp_path):
    data = _base()
    data["colour"] = "blue"
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "seeds" in msg and "checkpoints" in msg and "training" in msg


def test_unknown_nested_field_names_its_path(tmp_path):
    data = _base()
    data["training"]["learning_rate"] = 0.1
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "training.learning_rate" in msg
    assert "valid:" in msg and "lr" in msg and "momentum" in msg


def test_bad_optimizer(tmp_path):
    data = _base()
    data["training"]["optimizer"] = "rmsprop"
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "training.optimizer" in msg
    assert all(o in msg for o in ("sgd", "adam", "adamw"))


def test_bad_temperature_param(tmp_path):
    data = _base()
    data["axes"]["temperature"]["param"] = "momentum"
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "axes" in msg and "temperature.param" in msg and "momentum" in msg
    assert "batch_size" in msg and "lr" in msg


def test_width_axis_needs_integers(tmp_path):
    data = _base()
    data["axes"]["load"]["values"] = [4, 8, 12.5, 32]
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "axes" in msg and "load.values[2]" in msg and "integer" in msg and "12.5" in msg


def test_checkpoints_must_include_last_epoch(tmp_path):
    data = _base()
    last = data["training"]["epochs"]
    data["checkpoints"] = [0, 1, last - 1]
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "checkpoints" in msg and f"last epoch {last}" in msg


def test_metrics_epoch_must_be_a_checkpoint(tmp_path):
    data = _base()
    data["metrics"] = {"epoch": 7}
    assert 7 not in data["checkpoints"]
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "metrics.epoch" in msg and "7" in msg and str(data["checkpoints"]) in msg


def test_unknown_task(tmp_path):
    data = _base()
    data["task"] = "cifar10"
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "task" in msg and "cifar10" in msg and "mnist1d" in msg and "digits" in msg


def test_unknown_model_family(tmp_path):
    data = _base()
    data["model"]["family"] = "resnet9"
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "model" in msg and "resnet9" in msg and "cnn" in msg and "mlp" in msg


def test_unknown_model_knob(tmp_path):
    data = _base()
    data["model"]["dropout"] = 0.1
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "model" in msg and "dropout" in msg and "depth" in msg and "width" in msg


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "z.yaml"
    p.write_text("name: x\ntask: mnist1d\ntraining:\n  lr: 0.1: 2\n")
    msg = _load_error(p)
    assert "YAML" in msg and "line 4" in msg


def test_missing_required_field(tmp_path):
    data = _base()
    del data["seeds"]
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "seeds" in msg and "required" in msg.lower()


def test_duplicate_seeds(tmp_path):
    data = _base()
    data["seeds"] = [0, 1, 1]
    msg = _load_error(_write(tmp_path / "z.yaml", data))
    assert "seeds" in msg and "distinct" in msg


def test_missing_file(tmp_path):
    msg = _load_error(tmp_path / "nope.yaml")
    assert "no such file" in msg


def test_collection_with_two_specs_of_the_same_name(tmp_path):
    (tmp_path / "zoos").mkdir()
    _write(tmp_path / "zoos" / "a.yaml", _base())
    b = _base()
    b["seeds"] = [5]
    _write(tmp_path / "zoos" / "b.yaml", b)
    col = tmp_path / "col.yaml"
    col.write_text("name: mine\nzoos:\n  - zoos/a.yaml\n  - zoos/b.yaml\n")
    with pytest.raises(ZooError) as ei:
        load_config(col)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(col) in msg and "zoos" in msg and "mlp_mnist1d" in msg and "b.yaml" in msg


def test_collection_error_in_member_spec_names_that_file(tmp_path):
    (tmp_path / "zoos").mkdir()
    bad = _base()
    bad["training"]["optimizer"] = "lbfgs"
    member = _write(tmp_path / "zoos" / "bad.yaml", bad)
    col = tmp_path / "col.yaml"
    col.write_text("name: mine\nzoos: [zoos/bad.yaml]\n")
    with pytest.raises(ZooError) as ei:
        load_config(col)
    assert "bad.yaml" in str(ei.value) and "training.optimizer" in str(ei.value)
    assert Path(str(ei.value).split(":")[0]).resolve() == member.resolve()


# ---- the CLI ---------------------------------------------------------------------------------
def _zoo(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.zoo_cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("kind", ["bad_field", "bad_yaml"])
def test_cli_build_with_bad_config(tmp_path, kind):
    cfg = tmp_path / "bad.yaml"
    if kind == "bad_field":
        data = _base()
        data["training"]["optimizer"] = "rmsprop"
        _write(cfg, data)
    else:
        cfg.write_text("name: x\ntask: [mnist1d\n")
    out = tmp_path / "OUT"
    r = _zoo(["build", "--config", str(cfg), "--out", str(out), "--no-ray", "--quiet"], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("zoo: error:") and str(cfg) in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not out.exists() or not any(out.iterdir())


def test_cli_verify_without_manifest_exits_1(tmp_path):
    d = tmp_path / "notazoo"
    d.mkdir()
    r = _zoo(["verify", str(d)], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "manifest.json" in r.stdout
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_info_without_manifest_exits_2(tmp_path):
    d = tmp_path / "notazoo"
    d.mkdir()
    r = _zoo(["info", str(d)], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error:")
    assert str(d) in lines[0] and "manifest.json" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_bad_task_argument_value_fails_before_writing(tmp_path):
    import subprocess
    import sys

    spec = yaml.safe_load((REPO / "configs" / "zoos" / "pinn_convection.yaml").read_text())
    spec["axes"]["load"]["values"] = [1.0, -2.0]
    path = _write(tmp_path / "bad_beta.yaml", spec)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pipelines.zoo_cli", "build", "--config", str(path), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pinn_convection" in r.stderr and "beta" in r.stderr and "-2.0" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()

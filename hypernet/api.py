"""`predict_init`: fill a model's parameters with a hypernetwork's prediction.

    import hypernet, zoo
    model = zoo.nets.build("mlp", width=48, depth=3, task="mnist1d")
    hypernet.predict_init(model, "runs/ghn", task="mnist1d", temperature=64, load=48)

`hypernet` is a GraphHyperNetwork, a run folder of `hypernet train`, or a Hub model id (anything
GraphHyperNetwork.from_pretrained reads). The condition (which zoo, temperature, load) is
normalized exactly as in training (the statistics are in the hypernet's config.json); a missing
temperature or load defaults to the geometric middle of the zoo's axis, and a load whose axis is
the width defaults to the model's own width when the model has one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import json

from hypernet.diffusion import WeightDiffusion
from hypernet.generators import kind_of, kind_of_config
from hypernet.ghn import GraphHyperNetwork
from hypernet.igpg import WeightIGPG
from zoo.errors import ZooError
from zoo.nets import reset_batchnorm  # noqa: F401 - re-exported: hypernet.reset_batchnorm

Generator = GraphHyperNetwork | WeightDiffusion | WeightIGPG


def _class_of(config: dict, source: str = "config.json") -> type:
    """The model class of a saved generator, found through the registry (hypernet.generators)."""
    return kind_of_config(config, source).model


def load_hypernet(hypernet: Generator | str | Path) -> Generator:
    """A weight generator (GraphHyperNetwork, WeightDiffusion or WeightIGPG) from an instance, a local folder
    (config.json + model.safetensors) or a Hub id; the class is read from config.json."""
    if isinstance(hypernet, nn.Module):
        kind_of(hypernet)  # a generator of a registered kind, else a ZooError naming the kinds
        return hypernet
    if not isinstance(hypernet, (str, Path)):
        raise ZooError(f"hypernet must be a GraphHyperNetwork, a WeightDiffusion, a WeightIGPG, a folder or a Hub id; "
                       f"got {type(hypernet).__name__}")
    path = Path(hypernet)
    if path.exists():
        if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
            raise ZooError(f"{path}: not a hypernetwork folder (needs config.json and model.safetensors, "
                           "as written by `hypernet train` or save_pretrained)")
        cls = _class_of(json.loads((path / "config.json").read_text()), str(path / "config.json"))
        return cls.from_pretrained(str(path)).eval()
    text = str(hypernet)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise ZooError(f"{text}: no such hypernetwork folder")
    try:
        from huggingface_hub import hf_hub_download

        config = json.loads(Path(hf_hub_download(text, "config.json")).read_text())
        cls = _class_of(config, f"{text}: config.json")
    except ZooError:
        raise
    except Exception as e:  # noqa: BLE001 - the Hub client raises many kinds; name the id and the cause
        raise ZooError(f"hypernet {hypernet!r}: no such folder, and the Hub could not provide it "
                       f"({type(e).__name__}: {e})") from None
    try:
        return cls.from_pretrained(text).eval()
    except Exception as e:  # noqa: BLE001 - the Hub client raises many kinds; name the id and the cause
        raise ZooError(f"hypernet {hypernet!r}: no such folder, and the Hub could not provide it "
                       f"({type(e).__name__}: {e})") from None


load = load_hypernet  # DESIGN's name: hypernet.load("runs/ghn")


def condition_for(ghn: GraphHyperNetwork, model: nn.Module | None = None, *, task: str | None = None,
                  temperature: float | None = None, load: float | None = None,
                  zoo: str | None = None) -> tuple[torch.Tensor | None, dict]:
    """(condition vector, the resolved condition as a dict) for a model; (None, {}) for an unconditioned GHN."""
    spec = ghn.conditions
    if spec is None:
        if any(v is not None for v in (task, temperature, load, zoo)):
            raise ZooError("this hypernetwork takes no condition; call predict_init without task/temperature/load")
        return None, {}
    name = spec.resolve(zoo, task, getattr(model, "zoo_family", None))
    if temperature is None:
        temperature = spec.default(name, "temperature")
    if load is None:
        width = (getattr(model, "zoo_arch", None) or {}).get("width")
        load = float(width) if spec.axis_param(name, "load") == "width" and width else spec.default(name, "load")
    resolved = {"zoo": name, "task": spec.zoos[name]["task"], "temperature": float(temperature),
                "temperature_param": spec.axis_param(name, "temperature"), "load": float(load),
                "load_param": spec.axis_param(name, "load")}
    return spec.vector(name, temperature, load), resolved


@torch.no_grad()
def _training_data(gen: Generator, zoo: str | None, n: int = 512):
    """(x, y, objective) of the first n training samples of a zoo's task: what sampling selects on."""
    from zoo import tasks

    entry = gen.conditions.zoos[zoo]
    task = tasks.load(entry["task"], entry.get("task_args") or {})
    return task.x_train[:n], task.y_train[:n], task.objective


@torch.no_grad()
def predict_params(gen: Generator, model: nn.Module, condition: torch.Tensor | None, *, zoo: str | None = None,
                   n: int = 1, seed: int = 0, example_input=None) -> dict[str, torch.Tensor]:
    """Every parameter of `model` as the generator predicts it (a dict; the model is not modified).

    A GHN predicts deterministically. A sampling generator (diffusion: DDIM samples; IGPG: code
    sequences drawn by its prior) draws `n` samples (seeded) and, for n > 1, keeps the one with
    the lowest loss on the first 512 training samples of the zoo's task (never test data)."""
    if not kind_of(gen).samples:  # a GHN: one deterministic prediction
        return gen.predict(model, condition, example_input=example_input)
    from hypernet.tokenizer import TokenLayout, WeightTokenizer

    if not gen.config.tokenizer:
        raise ZooError(f"this {kind_of(gen).name} generator has no tokenizer statistics; it was not trained on a zoo")
    tok = WeightTokenizer.from_dict(gen.config.tokenizer)
    layout = TokenLayout.of(model, tok.token_size)
    samples = gen.sample_tokens(layout, tok.mask(layout), condition, n=n,
                                generator=torch.Generator().manual_seed(seed))  # (n, N, k)
    states = [tok.decode(s.double(), layout) for s in samples]
    if n == 1:
        return states[0]
    from torch.func import functional_call

    x, y, objective = _training_data(gen, zoo)
    losses = []
    was = model.training
    model.eval()
    for st in states:
        def fwd(params, buffers, xb, st=st):
            return functional_call(model, st, (xb[0],)).unsqueeze(0)

        losses.append(float(objective.evaluate(fwd, {}, {}, x, y.unsqueeze(0))["loss"][0]))
    model.train(was)
    return states[min(range(n), key=lambda i: losses[i])]


@torch.no_grad()
def predict_init(model: nn.Module, hypernet: Generator | str | Path, *, task: str | None = None,
                 temperature: float | None = None, load: float | None = None, zoo: str | None = None,
                 example_input=None, calibrate: torch.Tensor | None = None, n: int = 1, seed: int = 0) -> nn.Module:
    """Fill every parameter of `model` in place with the generator's prediction and return it.

    task / zoo: which zoo's condition (zoo= when several zoos share a task); temperature / load:
    where on that zoo's plane the model will be trained (e.g. batch size and width). BatchNorm
    running statistics are reset, or re-estimated on `calibrate` (a tensor of training inputs; a
    diffusion generator re-estimates them on the zoo task's training inputs by default).
    example_input: for models torch.fx cannot trace (hypernet.graph.module_to_graph).
    n, seed: samples drawn by a diffusion generator (the best by training loss is kept), its seed.
    """
    gen = load_hypernet(hypernet)
    cond, resolved = condition_for(gen, model, task=task, temperature=temperature, load=load, zoo=zoo)
    params = predict_params(gen, model, cond, zoo=resolved.get("zoo"), n=n, seed=seed, example_input=example_input)
    if calibrate is None and kind_of(gen).samples and resolved:
        calibrate = _training_data(gen, resolved["zoo"])[0]
    for name, p in model.named_parameters():
        if name not in params:
            raise ZooError(f"the hypernetwork predicted no tensor for parameter {name!r}")
        t = params[name]
        if t.shape != p.shape:
            raise ZooError(f"parameter {name!r}: predicted shape {tuple(t.shape)}, the model has {tuple(p.shape)}")
        p.copy_(t)
    reset_batchnorm(model, calibrate)
    return model

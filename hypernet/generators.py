"""The generator registry: a kind (ghn, ghn-lowrank, diffusion, igpg) -> its model class and config.

One registry pattern (zoo.registry) serves tasks, nets, decoders and generators: an unknown kind
is a ZooError listing the valid ones. `kind_of(model)` and `kind_of_config(config_json)` find the
kind of a generator instance or of a saved one (config.json of save_pretrained / a Hub id), so
callers ask the registry instead of testing classes or config keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from torch import nn

from hypernet.diffusion import DiffusionConfig, WeightDiffusion
from hypernet.ghn import GHNConfig, GraphHyperNetwork
from hypernet.igpg import IGPGConfig, WeightIGPG
from zoo.errors import ZooError
from zoo.registry import Registry


@dataclass(frozen=True)
class GeneratorKind:
    """What a kind is: its model class, the config dataclass of that class, the config section of
    a hypernet YAML that holds the model's fields, the fields the kind itself fixes (the GHN's
    decoder), and whether it samples weights (a generative model: sampled nets get BatchNorm
    statistics of the training data, and the benchmark audits it for memorization) or predicts
    them deterministically."""

    name: str
    model: type[nn.Module]
    config: type
    section: str
    samples: bool
    description: str
    fixed: dict = field(default_factory=dict)

    def matches(self, config: dict) -> bool:
        """Whether a saved model config (config.json) is this kind's: only this config class's
        fields, and the values this kind fixes."""
        names = {f.name for f in fields(self.config)}
        return set(config) <= names and all(config.get(k, v) == v for k, v in self.fixed.items())


GENERATORS: Registry[GeneratorKind] = Registry("generator kind")
for _kind in (
    GeneratorKind("ghn", GraphHyperNetwork, GHNConfig, "ghn", samples=False, fixed={"decoder": "tiled"},
                  description="graph hypernetwork with the tiled decoder (GHN-3)"),
    GeneratorKind("ghn-lowrank", GraphHyperNetwork, GHNConfig, "ghn", samples=False, fixed={"decoder": "lowrank"},
                  description="graph hypernetwork with the low-rank decoder (LoGAH)"),
    GeneratorKind("diffusion", WeightDiffusion, DiffusionConfig, "diffusion", samples=True,
                  description="conditional denoiser over weight tokens (DDPM training, DDIM sampling)"),
    GeneratorKind("igpg", WeightIGPG, IGPGConfig, "igpg", samples=True,
                  description="FSQ weight tokens + an autoregressive prior conditioned on task, architecture "
                              "and cell (IGPG)"),
):
    GENERATORS.register(_kind.name)(_kind)


def get(kind: str) -> GeneratorKind:
    """The kind named `kind`; a ZooError listing the kinds otherwise."""
    return GENERATORS.get(kind)


def kinds() -> list[str]:
    return GENERATORS.names()


def kind_of(model: nn.Module) -> GeneratorKind:
    """The kind of a generator instance (its class, and for a GHN its decoder)."""
    cfg = getattr(model, "config", None)
    for name in GENERATORS.names():
        k = GENERATORS.get(name)
        if isinstance(model, k.model) and all(getattr(cfg, f, v) == v for f, v in k.fixed.items()):
            return k
    raise ZooError(f"{type(model).__name__} is not a generator of a known kind; kinds: {', '.join(kinds())}")


def kind_of_config(config: dict, source: str = "config.json") -> GeneratorKind:
    """The kind of a saved generator from its model config (what save_pretrained writes). The
    first kind whose config class has every field and whose fixed values agree."""
    for name in GENERATORS.names():
        k = GENERATORS.get(name)
        if k.matches(config):
            return k
    raise ZooError(f"{source}: not the config of a known generator kind ({', '.join(kinds())}); "
                   f"its fields: {', '.join(sorted(config)) or 'none'}")

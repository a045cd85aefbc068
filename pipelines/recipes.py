"""`hypernet train` by kind: each generator kind's config class and recipe (pipelines.fit for the
GHNs, pipelines.fit_diffusion for diffusion, pipelines.fit_igpg for IGPG), both trained by the one loop of
pipelines.hypernet_train. The kinds themselves (model classes, configs) are hypernet.generators'.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from hypernet import generators
from pipelines import fit, fit_diffusion, fit_igpg
from pipelines.hypernet_train import check_out
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Recipe:
    config: type  # from_dict(data, source) -> a run config with .kind, .training, .to_dict()
    trainer: type  # (zoo_dir, out, config, zoos=, progress=) -> .train(resume)


# one entry per section of hypernet.generators' kinds (the GHN recipe serves both decoders)
RECIPES = {"ghn": Recipe(fit.HypernetConfig, fit.Trainer),
           "diffusion": Recipe(fit_diffusion.DiffusionRunConfig, fit_diffusion.DiffusionTrainer),
           "igpg": Recipe(fit_igpg.IGPGRunConfig, fit_igpg.IGPGTrainer)}


def recipe(kind: str) -> Recipe:
    return RECIPES[generators.get(kind).section]  # an unknown kind: the registry's error


def default_config_path(kind: str) -> Path:
    """configs/hypernets/<kind>.yaml, from the source tree or the copy a wheel ships."""
    if kind not in generators.kinds():
        raise ZooError(f"--kind {kind!r} is not valid; valid: {', '.join(generators.kinds())}")
    name = f"{kind.replace('-', '_')}.yaml"
    source = ROOT / "configs" / "hypernets" / name
    if source.exists():
        return source
    from importlib.resources import files

    return Path(str(files("zoo._configs.hypernets") / name))


def load_config(path: str | Path | None, kind: str | None = None):
    """A hypernet config from YAML, validated by its kind's config class; without a path the
    default for `kind`. An explicit --kind wins over the file's."""
    path = Path(path) if path else default_config_path(kind or "ghn")
    if not path.exists():
        raise ZooError(f"{path}: hypernet config not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ZooError(f"{path}: expected a mapping with kind, the model's section and training")
    if kind:
        data["kind"] = kind
    try:
        r = recipe(data.get("kind", "ghn"))
    except ZooError as e:
        raise ZooError(f"{path}: kind: {e}") from None
    return r.config.from_dict(data, str(path))


def train(zoo_dir: str | Path, out: str | Path, config, zoos: list[str] | None = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Train the generator `config` describes on the zoo folder into the run folder `out`."""
    out = Path(out)
    check_out(out, resume)
    return recipe(config.kind).trainer(zoo_dir, out, config, zoos=zoos, progress=progress).train(resume=resume)

"""Models that predict weights, learned from the zoo (graph hypernetworks, ...).

    model = zoo.nets.build("mlp", width=48, depth=3, task="mnist1d")
    hypernet.predict_init(model, "runs/ghn", task="mnist1d", temperature=64, load=48)   # in place
    ghn = hypernet.GraphHyperNetwork.from_pretrained("runs/ghn")   # local folder or Hub id

    data = hypernet.module_to_graph(model)    # nn.Module -> torch_geometric Data (hypernet.graph)
    params = ghn.predict(model, condition)    # every parameter of `model`, exact shapes (hypernet.ghn)

Training (`hypernet train`) and the init benchmark (`hypernet eval`) are pipelines: pipelines.fit
and pipelines.benchmark.

The names below are imported on first use (PEP 562), so `import hypernet.symmetry` or a study
that needs one helper does not pay for torch_geometric and the GHN.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "hypernet.api": ("load", "load_hypernet", "predict_init"),
    "zoo.nets": ("reset_batchnorm",),  # a net utility the GHN and the studies share
    "hypernet.conditions": ("ConditionSpec",),
    "hypernet.decoders": ("DECODERS", "DecoderConfig", "DecoderError", "build_decoder"),
    "hypernet.generators": ("GENERATORS", "GeneratorKind", "kind_of"),
    "hypernet.ghn": ("GHNConfig", "GraphHyperNetwork"),
    "hypernet.graph": ("MAX_DIMS", "OPS", "GraphError", "UnsupportedOpError", "module_to_graph", "validate"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'hypernet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

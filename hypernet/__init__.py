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

from zoo.lazy import lazy_exports

_EXPORTS = {
    "hypernet.api": ("load", "load_hypernet", "predict_init"),
    "zoo.nets": ("reset_batchnorm",),  # a net utility the GHN and the studies share
    "hypernet.conditions": ("ConditionSpec",),
    "hypernet.decoders": ("DECODERS", "DecoderConfig", "DecoderError", "build_decoder"),
    "hypernet.generators": ("GENERATORS", "GeneratorKind", "kind_of"),
    "hypernet.ghn": ("GHNConfig", "GraphHyperNetwork"),
    "hypernet.graph": ("MAX_DIMS", "OPS", "GraphError", "UnsupportedOpError", "module_to_graph", "validate"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)

"""Models that predict weights, learned from the zoo (graph hypernetworks, ...).

    model = zoo.nets.build("mlp", width=48, depth=3, task="mnist1d")
    hypernet.predict_init(model, "runs/ghn", task="mnist1d", temperature=64, load=48)   # in place
    ghn = hypernet.GraphHyperNetwork.from_pretrained("runs/ghn")   # local folder or Hub id

    data = hypernet.module_to_graph(model)    # nn.Module -> torch_geometric Data (hypernet.graph)
    params = ghn.predict(model, condition)    # every parameter of `model`, exact shapes (hypernet.ghn)

Training (`hypernet train`) and the init benchmark (`hypernet eval`) are pipelines: pipelines.fit
and pipelines.benchmark.
"""
from hypernet.api import load, load_hypernet, predict_init, reset_batchnorm
from hypernet.conditions import ConditionSpec
from hypernet.decoders import DECODERS, DecoderConfig, DecoderError, build_decoder
from hypernet.generators import GENERATORS, GeneratorKind, kind_of
from hypernet.ghn import GHNConfig, GraphHyperNetwork
from hypernet.graph import MAX_DIMS, OPS, GraphError, UnsupportedOpError, module_to_graph, validate

__all__ = [
    "ConditionSpec", "DECODERS", "DecoderConfig", "DecoderError", "GENERATORS", "GHNConfig", "GeneratorKind",
    "GraphError", "GraphHyperNetwork", "kind_of",
    "MAX_DIMS", "OPS", "UnsupportedOpError", "build_decoder", "load", "load_hypernet", "module_to_graph", "predict_init",
    "reset_batchnorm", "validate",
]

"""Models that predict weights, learned from the zoo (graph hypernetworks, ...).

    data = hypernet.module_to_graph(model)    # nn.Module -> torch_geometric Data (hypernet.graph)
    ghn = hypernet.GraphHyperNetwork(hypernet.GHNConfig(decoder="lowrank"))
    params = ghn.predict(model)               # every parameter of `model`, exact shapes (hypernet.ghn)
"""
from hypernet.decoders import DECODERS, DecoderConfig, DecoderError, build_decoder
from hypernet.ghn import GHNConfig, GraphHyperNetwork
from hypernet.graph import MAX_DIMS, OPS, GraphError, UnsupportedOpError, module_to_graph, validate

__all__ = [
    "DECODERS", "DecoderConfig", "DecoderError", "GHNConfig", "GraphError", "GraphHyperNetwork", "MAX_DIMS",
    "OPS", "UnsupportedOpError", "build_decoder", "module_to_graph", "validate",
]

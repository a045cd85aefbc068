"""Models that predict weights, learned from the zoo (graph hypernetworks, ...).

    data = hypernet.module_to_graph(model)    # nn.Module -> torch_geometric Data (hypernet.graph)
"""
from hypernet.graph import MAX_DIMS, OPS, GraphError, UnsupportedOpError, module_to_graph, validate

__all__ = ["MAX_DIMS", "OPS", "GraphError", "UnsupportedOpError", "module_to_graph", "validate"]

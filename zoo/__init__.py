"""weight-zoo: phase-diagram model zoos as Hugging Face datasets.

    import zoo
    model = zoo.load_model(row)            # a dataset row -> nn.Module with its weights
    zoo.evaluate(model, "mnist1d")         # {"test_loss": ..., "test_acc": ...}
"""
from zoo.errors import ZooError
from zoo.load import evaluate, load_model

__version__ = "0.1.0"
__all__ = ["load_model", "evaluate", "ZooError", "__version__"]

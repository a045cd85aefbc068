"""weight-zoo: phase-diagram model zoos as Hugging Face datasets.

    import zoo
    model = zoo.load_model(row)            # a dataset row -> nn.Module with its weights
    zoo.evaluate(model, row)               # {"test_loss": ..., "test_acc": ...} on the row's task
    zoo.evaluate(model, "mnist1d")         # or a task by name (task_args=... for e.g. convection)
    ds = zoo.open("zoo/phases", "mlp_mnist1d")   # Hub repo or local folder, weights as tensors
"""
from zoo.errors import ZooError
from zoo.load import evaluate, load_model


def open(repo_or_dir: str, zoo: str, *, revision: str | None = None, split: str = "train"):  # noqa: A001
    """A zoo's rows (local folder or Hub dataset repo) with `weights` as torch tensors."""
    from zoo.hub import open_zoo

    return open_zoo(repo_or_dir, zoo, revision=revision, split=split)


__version__ = "0.1.0"
__all__ = ["load_model", "evaluate", "open", "ZooError", "__version__"]

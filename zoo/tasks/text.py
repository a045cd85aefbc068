"""Character-level language modelling on a corpus every Python ships: `pydoc_data.topics`.

The corpus is the standard library's help texts (about 465k characters), joined in sorted topic
order. Vocabulary: newline + printable ASCII (95) + one unknown token for the few other
characters (typographic quotes and dashes, about 0.1%): 97 tokens, the same on every Python.
Split: the first 90% of the characters train, the last 10% test (fixed). Both are cut into
non-overlapping windows of `context` + 1 characters; x = the first `context` characters, y = the
next character at every position. The text differs slightly between Python versions, so the
task records the corpus' sha256 in `args["corpus_sha256"]`.
"""
from __future__ import annotations

import hashlib

import torch

from zoo.tasks.base import Task

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))  # ids 0..95; 96 = unknown
UNKNOWN = len(VOCAB)
TRAIN_FRACTION = 0.9


def corpus() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def encode(text: str) -> torch.Tensor:
    table = {ch: i for i, ch in enumerate(VOCAB)}
    return torch.tensor([table.get(ch, UNKNOWN) for ch in text], dtype=torch.int64)


def decode(ids) -> str:
    return "".join(VOCAB[i] if i < UNKNOWN else "\ufffd" for i in ids)


def _windows(ids: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = (ids.numel() - 1) // context  # windows of context + 1 overlapping by one character
    idx = torch.arange(n).unsqueeze(1) * context + torch.arange(context + 1)  # (n, context + 1)
    w = ids[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()  # (n, context) each


def load_pydoc(context: int = 32) -> Task:
    if not isinstance(context, int) or context < 2:
        raise ValueError(f"context must be an integer >= 2 (got {context!r})")
    text = corpus()
    ids = encode(text)
    cut = int(TRAIN_FRACTION * ids.numel())
    x_tr, y_tr = _windows(ids[:cut], context)
    x_te, y_te = _windows(ids[cut:], context)
    sha = hashlib.sha256(text.encode()).hexdigest()
    return Task("pydoc", x_tr, y_tr, x_te, y_te, n_classes=UNKNOWN + 1,
                args={"context": context, "corpus_sha256": sha})

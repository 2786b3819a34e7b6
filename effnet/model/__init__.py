"""EfficientNet v1 in Keras: one builder (`effnet.model.efficientnet`) over the architecture data in `effnet.core.architecture`."""
from __future__ import annotations

from typing import Iterator


def every_layer(layer) -> Iterator:
    """`layer` and, for models, every layer inside it, depth first (Keras keeps nested layers in `.layers`)."""
    yield layer
    for sub in getattr(layer, "layers", ()):
        yield from every_layer(sub)

"""effjax: efficient large models in JAX/Flax."""

from effjax import (
    agents,
    checkpoint,
    data,
    decoding,
    eval,
    export,
    formats,
    memory,
    models,
    pruning,
    ptq,
    qat,
    quant,
    transforms,
    zoo,
)
from effjax.decoding import generate
from effjax.eval import perplexity
from effjax.models import load

__version__ = "0.1.0"

__all__ = [
    "agents",
    "checkpoint",
    "data",
    "decoding",
    "eval",
    "export",
    "formats",
    "generate",
    "load",
    "memory",
    "models",
    "perplexity",
    "pruning",
    "ptq",
    "qat",
    "quant",
    "transforms",
    "zoo",
]

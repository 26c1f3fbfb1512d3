"""Every public name listed in an `__all__` imports."""

import importlib

import pytest

MODULES = ["effjax", "effjax.models", "effjax.decoding", "effjax.eval", "effjax.data",
           "effjax.checkpoint", "effjax.export", "effjax.formats", "effjax.memory",
           "effjax.quant", "effjax.ptq",
           "effjax.transforms", "effjax.agents", "effjax.serve", "effjax.qat", "effjax.pruning",
           "effjax.data.arithmetic", "effjax.data.gsm8k", "effjax.data.shapes_vqa",
           "effjax.durable", "effjax.demo", "pallas_kernels"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_import(name):
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    if names is None:  # a plain module: its public functions
        names = [n for n in dir(module) if not n.startswith("_")]
    for n in names:
        assert getattr(module, n) is not None, f"{name}.{n}"

"""What every exporter shares: the per-tensor record, the refusal of online transforms and
INT kernels' codes."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from effjax.formats import QArray
from effjax.formats.core import decode_elements, unpack_codes

ONLINE_TRANSFORMS = ("input_transform", "kv_rotation", "rotation")
"""Parameter keys of transforms applied at run time (QuaRot / SpinQuant / FlatQuant), which
neither GGUF nor compressed-tensors files can express."""


@dataclasses.dataclass(frozen=True)
class TensorRecord:
    """How one tensor was written.

    Attributes:
      name: the tensor's name in the file ("blk.3.attn_q.weight",
        "model.layers.3.self_attn.q_proj").
      source: the effjax format name, or "float32" for a float tensor.
      encoding: what was written: a GGML type ("MXFP4", "Q8_0", "F32", ...) or a
        compressed-tensors format ("mxfp4-pack-quantized", "dense", ...).
      exact: a reader of the file gets effjax's values bit for bit.
      max_abs_error: the largest |file value - effjax value| (0 when exact).
    """

    name: str
    source: str
    encoding: str
    exact: bool
    max_abs_error: float


def refuse_online_transforms(params, target: str) -> None:
    """Raises ValueError naming the online transforms in `params`, which `target` files
    cannot express."""
    leaves = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, QArray))[0]
    found = {getattr(k, "key", None) for path, _ in leaves for k in path} & set(ONLINE_TRANSFORMS)
    if found:
        raise ValueError(f"the params hold online transforms ({sorted(found)}) that {target} "
                         "files cannot express; export the model before rotating it")


def int_codes(q: QArray, name: str, target: str) -> np.ndarray:
    """An INT kernel's element codes (out, in) as int32: signed when symmetric, the stored
    0 .. 2^bits - 1 otherwise.

    Raises:
      ValueError: an element is NaN (symmetric INT's reserved code -2^(bits-1)), which
        `target` cannot encode, naming the tensor.
    """
    values = np.asarray(decode_elements(unpack_codes(q.codes, q.fmt.bits, q.shape[q.axis]),
                                        q.fmt))
    if np.isnan(values).any():
        raise ValueError(f"{name}: NaN elements (effjax's code {-(1 << (q.fmt.bits - 1))}) "
                         f"have no {target} encoding")
    return values.astype(np.int32)

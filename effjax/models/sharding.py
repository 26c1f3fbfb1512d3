"""Placing decoder parameters on a device mesh: FSDP over a data axis, heads over a model axis."""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effjax.models.decoder import Params

# Parameter name -> (role of axis 0, role of axis 1); "fsdp" shards over the data axis,
# "model" over the model axis (attention heads / MLP hidden units / vocabulary).
_RULES = {
    "q_proj": ("fsdp", "model"),
    "k_proj": ("fsdp", "model"),
    "v_proj": ("fsdp", "model"),
    "o_proj": ("model", "fsdp"),
    "gate_proj": ("fsdp", "model"),
    "up_proj": ("fsdp", "model"),
    "down_proj": ("model", "fsdp"),
    "lm_head": ("fsdp", "model"),
    "embed": ("model", "fsdp"),
}


def param_partition_specs(
    params: Params, mesh: Mesh, *, data_axis: str = "data", model_axis: str = "model"
) -> Params:
    """A `PartitionSpec` per parameter.

    Kernels shard their input features over `data_axis` (FSDP) and their heads / hidden
    units over `model_axis`; biases follow their kernel's output axis; norms are
    replicated. A dimension that the mesh axis does not divide stays replicated.

    Args:
      params: the parameter pytree.
      mesh: the device mesh.
      data_axis, model_axis: mesh axis names (an axis missing from the mesh is not used).

    Returns:
      A pytree of `PartitionSpec`s matching params (QArray leaves get one per stored array).
    """
    axis_of = {"fsdp": data_axis, "model": model_axis}

    def spec(path, leaf):
        names = [getattr(k, "key", None) for k in path]
        rule = next((_RULES[n] for n in reversed(names) if n in _RULES), None)
        if rule is None or names[-1] == "weight" or {"input_transform", "kv_rotation"} & set(
                names):  # norms and the small online transforms are replicated
            return PartitionSpec()
        roles = rule[1:] if names[-1] == "bias" else rule
        if any(isinstance(k, jax.tree_util.GetAttrKey) for k in path):
            roles = roles[::-1]  # a QArray's arrays put the contraction (input) axis last
        if len(roles) != leaf.ndim:
            return PartitionSpec()
        axes = []
        for dim, role in zip(leaf.shape, roles, strict=True):
            name = axis_of[role]
            ok = name in mesh.shape and dim % mesh.shape[name] == 0
            axes.append(name if ok else None)
        return PartitionSpec(*axes)

    return jax.tree_util.tree_map_with_path(spec, params)


def shard_params(
    params: Params, mesh: Mesh, *, data_axis: str = "data", model_axis: str = "model"
) -> Params:
    """Places params on `mesh` following `param_partition_specs`.

    Returns:
      The same pytree with `NamedSharding`-placed arrays; `forward` and `LM.apply` run on it
      unchanged (jit propagates the shardings).
    """
    specs = param_partition_specs(params, mesh, data_axis=data_axis, model_axis=model_axis)
    return jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh, s)), params, specs)

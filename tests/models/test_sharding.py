"""lm.apply on a device mesh with sharded parameters gives the single-device logits (Qwen3
with q/k norms, Gemma 3 with sandwich norms and a sliding-window layer)."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

import effjax
from effjax.models import param_partition_specs, shard_params
from effjax.transforms import online
from tests.models.hf_tiny import write_tiny


@pytest.fixture(scope="module", params=["qwen3_qknorm_headdim", "gemma3_local_global"])
def lm(tmp_path_factory, request):
    path = tmp_path_factory.mktemp(request.param)
    write_tiny(request.param, path)
    return effjax.load(path)


@pytest.mark.parametrize("shape", [(2, 4), (4, 2), (8, 1)])
def test_sharded_apply_matches_single_device(lm, shape):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()).reshape(shape), ("data", "model"))
    tokens = np.random.RandomState(0).randint(0, lm.config.vocab_size, (8, 12)).astype(np.int32)
    single = np.asarray(lm.apply(lm.params, tokens))
    sharded = shard_params(lm.params, mesh)
    q = sharded["layers"][0]["attn"]["q_proj"]["kernel"]
    assert len(q.sharding.device_set) == 8
    assert q.addressable_shards[0].data.shape == (q.shape[0] // shape[0], q.shape[1] // shape[1])
    for norm in ("attn_out_norm", "mlp_out_norm") if lm.config.sandwich_norms else ():
        assert sharded["layers"][1][norm]["weight"].sharding.is_fully_replicated
    tokens = jax.device_put(tokens, jax.sharding.NamedSharding(mesh, PartitionSpec("data")))
    out = lm.apply(sharded, tokens)
    # float32 rounding of differently ordered sums: 1e-5 of the largest logit
    np.testing.assert_allclose(np.asarray(out), single, atol=1e-5 * np.abs(single).max(), rtol=0)


def test_partition_specs():
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    params = {"embed": {"embedding": np.zeros((12, 6))},
              "layers": {0: {"attn": {"o_proj": {"kernel": np.zeros((8, 6))},
                                      "q_proj": {"kernel": np.zeros((6, 8)),
                                                 "bias": np.zeros(8)}},
                             "input_norm": {"weight": np.zeros(6)},
                             "attn_out_norm": {"weight": np.zeros(6),
                                               "rotation": np.zeros((6, 6))},
                             "mlp": {"down_proj": {"kernel": np.zeros((8, 6)),
                                                   "input_transform": online.Kron(
                                                       np.zeros((2, 2)), np.zeros((4, 4)))
                                                   }}}}}
    specs = param_partition_specs(params, mesh)
    assert specs["embed"]["embedding"] == PartitionSpec("model", "data")
    layer = specs["layers"][0]
    assert layer["attn"]["o_proj"]["kernel"] == PartitionSpec("model", "data")
    assert layer["attn"]["q_proj"]["kernel"] == PartitionSpec("data", "model")
    assert layer["attn"]["q_proj"]["bias"] == PartitionSpec("model")
    assert layer["input_norm"]["weight"] == PartitionSpec()
    assert layer["attn_out_norm"]["rotation"] == PartitionSpec()  # Gemma's, after QuaRot
    assert layer["mlp"]["down_proj"]["input_transform"].right == PartitionSpec()
    # 6 is not divisible by the model axis (4): that dimension stays replicated.
    odd = param_partition_specs({"mlp": {"up_proj": {"kernel": np.zeros((4, 6))}}}, mesh)
    assert odd["mlp"]["up_proj"]["kernel"] == PartitionSpec("data", None)

"""The kernels' shared pieces: in-kernel packing, tiles, backend choice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.formats import core
from pallas_kernels import common

CPU = jax.default_backend() == "cpu"


@pytest.mark.parametrize("bits", [4, 6])
@pytest.mark.parametrize("k", [32, 96, 256, 1024])
def test_pack_tile_equals_the_reference_packing(bits, k):
    codes = jnp.asarray(np.random.RandomState(k).randint(0, 2**bits, (5, k)), jnp.uint8)
    packed = common.pack_tile(codes, bits)
    np.testing.assert_array_equal(packed, core.pack_codes(codes, bits))
    np.testing.assert_array_equal(common.unpack_tile(packed, bits, k), codes)
    assert common.packed_width(core.get_format("mxfp4" if bits == 4 else "mxfp6_e2m3"), k) == (
        packed.shape[1])


def test_tiles_backends_and_chunks():
    assert common.default_block(768, 32, 512) == 384
    assert common.default_block(96, 32, 8192) == 96
    with pytest.raises(ValueError, match="no tile that is a multiple of 32 divides 48"):
        common.default_block(48, 32, 512)
    with pytest.raises(ValueError, match=r"expected block_n=0 to divide n=8"):
        common.check_tile("block_n", 0, "n", 8)
    assert common.chunks(768) == [(0, 256), (256, 256), (512, 256)]
    assert common.chunks(96) == [(0, 32), (32, 32), (64, 32)]
    assert common.target_backend("tpu") == "tpu"
    assert common.target_backend(None) == (None if CPU else jax.default_backend())
    assert common.interpret_mode(None, None) and not common.interpret_mode(None, "gpu")
    assert common.interpret_mode(True, "tpu")
    assert common.compiler_params("gpu") is not None and common.compiler_params("tpu") is None


def test_pow2_block_and_tile_setup_per_backend():
    assert common.pow2_block(4096, 32, 512) == 512
    assert common.pow2_block(768, 32, 512) == 256
    assert common.pow2_block(96, 1, 128) == 32
    assert common.pow2_block(48, 16, 512) == 16
    assert common.pow2_block(96, 96, 512) == 96  # no power of two is a multiple of 96
    assert common.tile_setup(40, 4096, 32, None, None, None, "gpu") == (64, 512, False, "gpu")
    assert common.tile_setup(5, 768, 16, None, None, None, "gpu") == (16, 256, False, "gpu")
    assert common.tile_setup(300, 4096, 32, None, None, None, "tpu") == (256, 4096, False, "tpu")


def test_matmul_setup_per_backend():
    assert common.matmul_setup(1, 4096, 4096, 32, None, None, None, None, "gpu") == (
        16, 64, 128, False, "gpu")
    assert common.matmul_setup(2048, 4096, 4096, 32, None, None, None, None, "gpu") == (
        128, 64, 128, False, "gpu")
    assert common.matmul_setup(20, 4096, 8192, 32, None, None, None, None, "tpu") == (
        24, 256, 512, False, "tpu")
    # GPU tiles are powers of two even where the dims are not (Triton lowers no others)
    assert common.matmul_setup(40, 96, 768, 32, None, None, None, None, "gpu") == (
        64, 32, 128, False, "gpu")
    if CPU:  # no accelerator: interpret-mode tiles
        assert common.matmul_setup(40, 96, 256, 32, None, None, None, None, None) == (
            40, 96, 256, True, None)
    with pytest.raises(ValueError, match="expected block_m=-4 to be positive"):
        common.matmul_setup(4, 96, 256, 32, -4, None, None, None, None)


@pytest.mark.parametrize("name", common.MATMUL_WEIGHT_FORMATS)
def test_block_top_is_the_largest_decoded_element(name):
    fmt = core.get_format(name, granularity="group", group_size=32) if name.startswith("int") else (
        core.get_format(name))
    code = jnp.asarray(core.max_code(fmt), core.filled_dtype(fmt))
    top = common.block_top(fmt)
    assert isinstance(top, float) and top == float(core.decode_elements(code, fmt))
    codes = jax.lax.bitcast_convert_type(jnp.arange(2**fmt.bits, dtype=jnp.uint8),
                                         core.filled_dtype(fmt))  # every code
    every = core.decode_elements(codes, fmt)
    assert top == float(jnp.max(jnp.where(jnp.isfinite(every), every, -jnp.inf)))

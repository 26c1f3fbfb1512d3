"""What the kernels share: backend choice, tile checks and the per-tile format arithmetic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from effjax.formats import QArray, core, get_format
from effjax.formats.elements import element_format
from effjax.formats.registry import Format

# Formats with a fixed block along the contraction axis: the ones the kernels tile.
BLOCK_FORMATS = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8",
                 "nvfp4", "hif4")
# dequant_matmul also takes per-group integers (symmetric, groups of 32/64/128).
MATMUL_WEIGHT_FORMATS = (*BLOCK_FORMATS, "int8", "int4")


def interpret_mode(interpret: bool | None, backend: str | None) -> bool:
    """The `interpret` flag of a pallas_call: as given, or True when there is no TPU or GPU
    target (`target_backend`)."""
    return backend is None if interpret is None else bool(interpret)


BACKENDS = ("tpu", "gpu")


def target_backend(backend: str | None) -> str | None:
    """The backend a kernel is lowered for: as given ("tpu" or "gpu"), else the default one
    when it is a TPU or GPU (None otherwise: interpret mode)."""
    if backend is None:
        default = jax.default_backend()
        if default in ("gpu", "cuda", "rocm"):
            return "gpu"
        return "tpu" if default == "tpu" else None
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    return backend


def compiler_params(backend: str | None):
    """Pallas compiler parameters: Triton on GPU (this JAX's default GPU lowering, Mosaic GPU,
    wants warpgroup-shaped kernels), the Mosaic defaults on TPU."""
    if backend == "gpu":
        from jax.experimental.pallas import triton as pltriton

        return pltriton.CompilerParams()
    return None


def block_top(fmt: Format) -> float:
    """The largest element value (before scaling) of a kernel format, as a Python float.

    Pure Python, no JAX ops: kernels call it while tracing, where an eager op would fail
    under an abstract mesh (jax.export for a TPU without one).
    """
    if fmt.kind == "hif4":
        return 1.75  # magnitude code 7, in quarters
    if fmt.kind == "int":  # symmetric per-group integers
        return float(2 ** (fmt.bits - 1) - 1)
    if fmt.element == "int8":
        return 127.0  # MXINT8: the 2^-6 of its elements is in the scale
    return element_format(fmt.element).max_normal


def block_format(fmt: str | Format, allowed: tuple[str, ...] = BLOCK_FORMATS) -> Format:
    """The `Format` of a kernel argument, refusing formats the kernel does not tile."""
    fmt = get_format(fmt)
    if fmt.name not in allowed or fmt.granularity != "group":
        raise ValueError(f"fmt must be one of {allowed} with per-group scales, got {fmt.name} "
                         f"({fmt.granularity})")
    return fmt


def check_tile(name: str, block: int, dim_name: str, dim: int, multiple: int = 1) -> None:
    """Raises unless `block` divides `dim` and is a multiple of `multiple`."""
    if block <= 0 or dim % block:
        raise ValueError(f"expected {name}={block} to divide {dim_name}={dim}")
    if block % multiple:
        raise ValueError(f"expected {name}={block} to be a multiple of {multiple} (the "
                         f"format's group)")


def default_block(dim: int, multiple: int, preferred: int) -> int:
    """The largest tile <= preferred that divides dim and is a multiple of `multiple`."""
    for b in range(min(preferred, dim) // multiple * multiple, 0, -multiple):
        if dim % b == 0:
            return b
    raise ValueError(f"no tile that is a multiple of {multiple} divides {dim}")


def pow2_block(dim: int, multiple: int, preferred: int) -> int:
    """The largest power-of-two tile <= preferred that divides dim and is a multiple of
    `multiple` (Triton lowers only power-of-two arrays); `default_block` when none is."""
    b = 1 << (min(preferred, dim).bit_length() - 1)
    while b >= multiple:
        if dim % b == 0 and b % multiple == 0:
            return b
        b //= 2
    return default_block(dim, multiple, preferred)


def _gpu_rows(m: int, most: int = 64) -> int:
    """Rows per GPU tile: m's power of two, between 16 (tl.dot's least) and `most`."""
    return max(16, min(1 << (m - 1).bit_length(), most))


def tile_setup(m: int, k: int, group: int, block_m: int | None, block_k: int | None,
               interpret: bool | None, backend: str | None) -> tuple[int, int, bool, str | None]:
    """The elementwise kernels' static arguments: (block_m, block_k, interpret, backend).

    Tiles as given, else per backend. GPU (Triton): power-of-two tiles of 16-64 rows and at
    most 512 columns (register-sized); TPU and interpret mode: up to 256 rows and the widest
    tile of at most 8192 columns that divides k. block_k must divide k and be a multiple of
    the group.
    """
    backend = target_backend(backend)
    if backend == "gpu":
        block_m = block_m or _gpu_rows(m)
        block_k = block_k or pow2_block(k, group, 512)
    block_m = block_m or min(m, 256)
    block_k = block_k or default_block(k, group, 8192)
    if block_m <= 0:
        raise ValueError(f"expected block_m={block_m} to be positive")
    check_tile("block_k", block_k, "k", k, group)
    return block_m, block_k, interpret_mode(interpret, backend), backend


def matmul_setup(m: int, n: int, k: int, group: int, block_m: int | None,
                 block_n: int | None, block_k: int | None, interpret: bool | None,
                 backend: str | None) -> tuple[int, int, int, bool, str | None]:
    """The matmul kernels' static arguments: (block_m, block_n, block_k, interpret, backend).

    Tiles as given, else per backend. GPU (Triton): tl.dot wants at least 16 rows; up to
    128 x 64 x 128 (the best of `experiments/bench_kernels.py`'s sweep on an H200 at 16 and
    2048 rows); TPU: MXU-sized tiles; interpret mode: few steps. Rows may leave a ragged
    tile; block_n must divide n and block_k divide k.
    """
    backend = target_backend(backend)
    if backend == "gpu":
        dm, dn, dk = _gpu_rows(m, 128), 64, 128
        block_n = block_n or pow2_block(n, 1, dn)
        block_k = block_k or pow2_block(k, group, dk)
    elif backend == "tpu":
        dm, dn, dk = min(-(-m // 8) * 8, 256), 256, 512
    else:
        dm, dn, dk = min(m, 128), 256, 256
    block_m = block_m or dm
    block_n = block_n or default_block(n, 1, dn)
    block_k = block_k or default_block(k, group, dk)
    if block_m <= 0:
        raise ValueError(f"expected block_m={block_m} to be positive")
    check_tile("block_n", block_n, "n", n)
    check_tile("block_k", block_k, "k", k, group)
    return block_m, block_n, block_k, interpret_mode(interpret, backend), backend


def family(fn, kinds: tuple[str, ...], doc: str, fmt_of):
    """`fn` restricted to formats of the given kinds (`fmt_of(*args, **kwargs)` finds it)."""
    def restricted(*args, **kwargs):
        fmt = fmt_of(*args, **kwargs)
        if fmt.kind not in kinds:
            raise ValueError(f"expected a {'/'.join(kinds)} format, got {fmt.name}")
        return fn(*args, **kwargs)

    restricted.__doc__ = f"{doc}\n\nSee `{fn.__name__}` for the arguments."
    return restricted


def packed_width(fmt: Format, k: int) -> int:
    """Bytes per row of k stored codes."""
    return k * fmt.bits // 8 if fmt.bits in (4, 6) else k


def stored_arrays(q: QArray) -> dict:
    """The per-group arrays of a QArray by name, without the global scale."""
    return {k: v for k, v in q.stored().items() if k != "global_scale"}


def check_qarray(name: str, q: QArray, axis: int, allowed: tuple[str, ...]) -> None:
    """Raises unless q is a 2-D QArray in an allowed per-group format along `axis`."""
    if not isinstance(q, QArray):
        raise ValueError(f"{name} must be a QArray, got {type(q).__name__}")
    block_format(q.fmt, allowed)
    if q.ndim != 2 or q.axis != axis:
        raise ValueError(f"{name} must be 2-D and quantized along axis {axis}, got shape "
                         f"{q.shape} and axis {q.axis}")
    k = q.shape[axis]
    if k % q.fmt.group_size:
        raise ValueError(f"{name}'s contraction dimension k={k} must be a multiple of its group "
                         f"{q.fmt.group_size}")
    rows = q.shape[1 - axis]
    expected = {"codes": (rows, packed_width(q.fmt, k)), "scale": (rows, k // q.fmt.group_size)}
    if q.levels is not None:
        expected["levels"] = (rows, k // q.fmt.group_size, 3)
    for field, shape in expected.items():
        got = tuple(getattr(q, field).shape)
        if got != shape:
            raise ValueError(f"{name}.{field} has shape {got}, expected {shape} for a {q.fmt.name} "
                             f"array of shape {q.shape} along axis {axis}")


def float_input(name: str, x: jax.Array) -> jax.Array:
    """x as an array of float32 / bfloat16 / float16, else a ValueError."""
    x = jnp.asarray(x)
    if x.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
        raise ValueError(f"{name} must be float32, bfloat16 or float16, got {x.dtype}")
    return x


def row_specs(arrays: list[jax.Array], block_rows: int, grid_axis: int) -> list[pl.BlockSpec]:
    """BlockSpecs giving each grid step `block_rows` whole rows of every array (codes and
    stored arrays of a quantized operand), the row block following grid axis `grid_axis`."""
    def spec(a):
        return pl.BlockSpec((block_rows, *a.shape[1:]),
                            lambda *ij: (ij[grid_axis],) + (0,) * (a.ndim - 1))
    return [spec(a) for a in arrays]


def dequantized_tile(refs: dict, fmt: Format, start: jax.Array, block_k: int,
                     dtype) -> jax.Array:
    """The dequantized (rows, block_k) tile at element offset `start` of a quantized operand
    whose refs ("codes" and the stored arrays) hold whole rows (no global scale)."""
    group = fmt.group_size
    packed = refs["codes"][:, pl.ds(start * packed_width(fmt, group) // group,
                                    packed_width(fmt, block_k))]
    stored = {}
    for name, ref in refs.items():
        if name == "levels":
            stored[name] = ref[:, pl.ds(start // group, block_k // group), :]
        elif name != "codes":
            stored[name] = ref[:, pl.ds(start // group, block_k // group)]
    values = core.codes_to_values(packed, stored, fmt, block_k, unpack=unpack_tile)
    return values.reshape(values.shape[0], block_k).astype(dtype)


def _spread(k: int, ratio: tuple[int, int], offsets: tuple[int, ...]) -> jax.Array:
    """(k, k * den / num) 0/1 matrix sending element i to byte (i // num) * den +
    offsets[i % num] (offsets < 0: nowhere), with (num, den) = ratio. Built from iotas (a
    kernel body may not capture array constants)."""
    num, den = ratio
    shape = (k, k * den // num)
    i = jax.lax.broadcasted_iota(jnp.int32, shape, 0)
    col = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
    offset = jnp.full(shape, -1, jnp.int32)
    for p, o in enumerate(offsets):
        if o >= 0:
            offset = jnp.where(i % num == p, o, offset)
    return ((offset >= 0) & ((i // num) * den + offset == col)).astype(jnp.float32)


def _pos(shape: tuple[int, ...], period: int) -> jax.Array:
    return jax.lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1) % period


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


_CHUNK = 256  # elements per 0/1 product: the matrices stay at most 256 x 192


def chunks(k: int) -> list[tuple[int, int]]:
    """(start, size) pieces of a length-k axis, size the largest of 256, 128, ... dividing k:
    the widths at which `pack_tile` / `unpack_tile` work without slicing values."""
    size = next(c for c in (_CHUNK, 128, 64, 32, 16, 8, 4) if k % c == 0)
    return [(s, size) for s in range(0, k, size)]


def pack_tile(codes: jax.Array, bits: int) -> jax.Array:
    """`effjax.formats.core.pack_codes` for a kernel tile (rows, k), without reshapes or
    bitcasts (which kernel lowerings lack): each element's share of a byte, shifted into
    place elementwise, is summed into its byte by a 0/1 matrix product (exact: integers
    below 256 in float32), chunk by chunk along k."""
    if bits not in (4, 6):
        return codes
    k = codes.shape[-1]
    if k > _CHUNK:
        return jnp.concatenate([pack_tile(codes[:, s:s + n], bits) for s, n in chunks(k)], -1)
    c = codes.astype(jnp.int32)
    k = c.shape[-1]
    p = _pos(c.shape, 2 if bits == 4 else 4)
    if bits == 4:  # element 2j -> low nibble of byte j, 2j + 1 -> high nibble
        packed = _dot(jnp.where(p == 1, c << 4, c).astype(jnp.float32), _spread(k, (2, 1), (0, 0)))
    else:  # four codes -> three bytes: the first byte each code touches, then the next
        first = jnp.where(p == 0, c, jnp.where(p == 1, (c & 3) << 6,
                                               jnp.where(p == 2, (c & 15) << 4, c << 2)))
        second = jnp.where(p == 1, c >> 2, jnp.where(p == 2, c >> 4, 0))
        packed = (_dot(first.astype(jnp.float32), _spread(k, (4, 3), (0, 0, 1, 2)))
                  + _dot(second.astype(jnp.float32), _spread(k, (4, 3), (-1, 1, 2, -1))))
    return packed.astype(jnp.int32).astype(jnp.uint8)


def unpack_tile(packed: jax.Array, bits: int, k: int) -> jax.Array:
    """`effjax.formats.core.unpack_codes` for a kernel tile: each byte is copied to the
    elements it holds by a 0/1 matrix product, then each element shifts and masks out its
    own bits."""
    if bits not in (4, 6):
        return packed
    if k > _CHUNK:
        parts = [unpack_tile(packed[:, s * bits // 8:(s + n) * bits // 8], bits, n)
                 for s, n in chunks(k)]
        return jnp.concatenate(parts, -1)
    b = packed.astype(jnp.float32)
    if bits == 4:
        mine = _dot(b, _spread(k, (2, 1), (0, 0)).T).astype(jnp.int32)
        p = _pos(mine.shape, 2)
        return (jnp.where(p == 1, mine >> 4, mine) & 15).astype(jnp.uint8)
    first = _dot(b, _spread(k, (4, 3), (0, 0, 1, 2)).T).astype(jnp.int32)
    second = _dot(b, _spread(k, (4, 3), (-1, 1, 2, -1)).T).astype(jnp.int32)
    p = _pos(first.shape, 4)
    c = jnp.where(p == 0, first & 63, jnp.where(
        p == 1, (first >> 6) | ((second & 15) << 2), jnp.where(
            p == 2, (first >> 4) | ((second & 3) << 4), first >> 2)))
    return c.astype(jnp.uint8)

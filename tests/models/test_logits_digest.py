"""Pinned digests of every model family's outputs on fixed inputs.

Written before the model became plain functions over typed parameters (issue 31) and kept
after it: a refactor of the forward must leave the logits identical bit for bit under the
test tier's XLA flags (tests/conftest.py). A digest is the SHA-256 of the float32 output
bytes; on a mismatch the message also gives the largest difference from the pinned
first values, to tell a reordered sum (tiny) from a broken model (large).

The pinned path is the reference: dense attention, every layer unrolled (`REFERENCE`). The
fast paths (blocked attention, layers under `scan`) reorder sums, so they are held to the
reference within a tolerance instead (tests/models/test_sdpa.py).
"""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax.models import LMConfig, forward, init_params
from effjax.quant import Recipe, Rule, quantize_params
from effjax.transforms import online

REFERENCE = dict(attention_impl="dense", scan_layers=False)

PINNED = {
    # name: (sha256 of the float32 bytes, shape, the first 4 values)
    "tiny-transformed": ("54b4b811669e17553bdb0ad92da1f049b56a7cd29d557e35bab2b0c95c55aff6",
                         (2, 7, 64), [-0.07270795106887817, 0.010204707272350788,
                                      0.6873285174369812, -0.6352339386940002]),
    "tiny-transformed-decode": (
        "10bbdf1d4d6c7aeff250c471cef4b520bd181e6c247855b0cf447f7120e5e8c3", (2, 2, 64),
        [-1.6264463663101196, 0.6566734910011292, -0.43542611598968506, 0.20702189207077026]),
    "smollm2": ("cddcdaabe2ab79f51644de282c2947c1726206b59f92ba0e78afbccb8626999b",
                (1, 12, 49152), [16.09465789794922, 7.211972236633301, 11.02463150024414,
                                 5.32415771484375]),
    "shapes-vlm": ("af56e493dd7db61b51dfc36cfb9a108b0f29f55f7cb97137334d278adbe27762",
                   (2, 77, 48), [-0.638207733631134, -1.8451403379440308, 1.261978030204773,
                                 -2.3554422855377197]),
    "agent-dllm": ("f30c42460abe7e2aab337b275fa308270d7e79bc9879d7a683bec529dcef942e",
                   (2, 24, 128), [-1.2965167760849, -0.7002801299095154, -2.8007700443267822,
                                  -2.923510789871216]),
    "minilm": ("05c914800bef2680aa679242fb1cfe5c32ae896a6dfa4a33a096c48ce6d6f698", (2, 384),
               [-0.01895521581172943, -0.004049769137054682, -0.012843571603298187,
                0.10319606959819794]),
}


def digest(out) -> tuple[str, tuple[int, ...], list[float]]:
    a = np.ascontiguousarray(np.asarray(out, np.float32))
    return hashlib.sha256(a.tobytes()).hexdigest(), a.shape, a.reshape(-1)[:4].tolist()


def check(name: str, out) -> None:
    got = digest(out)
    assert name in PINNED, f"{name}: no pinned digest; got {got}"
    want = PINNED[name]
    assert got[1] == want[1], f"{name}: shape {got[1]}, pinned {want[1]}"
    diff = float(np.max(np.abs(np.asarray(got[2]) - np.asarray(want[2]))))
    assert got[0] == want[0], (f"{name}: logits changed (first values differ by up to "
                               f"{diff:.3g}); got {got}")


def transformed_tiny():
    """A tiny decoder carrying every kind of online transform, its weights in MXFP4 and its
    activations and KV cache quantized: the paths a refactor of the forward must keep."""
    config = LMConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, qkv_bias=True,
                      tie_word_embeddings=False)
    params = init_params(config, jax.random.PRNGKey(0))
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 16))

    def mat(*shape):
        return jax.random.normal(next(keys), shape) / np.sqrt(shape[-1])

    l0, l1 = params["layers"][0], params["layers"][1]
    l0["attn"]["q_proj"]["input_transform"] = online.Kron(mat(4, 4), mat(8, 8))
    l0["mlp"]["down_proj"]["input_transform"] = online.BlockDiag(mat(3, 16, 16))
    l1["attn"]["o_proj"]["input_transform"] = online.GPK(mat(2, 2), mat(2, 8, 8),
                                                         clip=jnp.array([0.9, 0.7]))
    l1["mlp"]["gate_proj"]["input_transform"] = online.PerType(mat(2, 32, 32))
    l0["attn"]["kv_rotation"] = jnp.linalg.qr(mat(8, 8))[0]
    recipe = Recipe(rules=(Rule(pattern="mlp/", weight="mxfp4", activation="mxfp8_e4m3"),
                           Rule(pattern="attn/", weight="nvfp4", activation="int8")),
                    kv_cache="int8")
    return config, quantize_params(params, recipe), recipe


@pytest.mark.slow  # ~55 s of XLA compiles; the four real models' digests stay in the fast tier
def test_transformed_tiny_prefill_and_decode_are_pinned():
    config, params, recipe = transformed_tiny()
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 7)), jnp.int32)
    types = jnp.asarray(np.random.default_rng(1).integers(0, 2, (2, 7)), jnp.int32)
    logits, _ = forward(params, tokens, config=config, recipe=recipe, token_types=types,
                        **REFERENCE)
    check("tiny-transformed", logits)
    cache = effjax.models.init_cache(config, 2, 10)
    _, cache = forward(params, tokens[:, :5], config=config, recipe=recipe, cache=cache,
                       token_types=types[:, :5], **REFERENCE)
    step, _ = forward(params, tokens[:, 5:], config=config, recipe=recipe, cache=cache,
                      token_types=types[:, 5:], **REFERENCE)
    check("tiny-transformed-decode", step)


def test_smollm2_logits_are_pinned(smollm2):
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 49152, (1, 12)), jnp.int32)
    logits, _ = forward(smollm2.params, tokens, config=smollm2.config, **REFERENCE)
    check("smollm2", logits)


def test_shapes_vlm_logits_are_pinned(monkeypatch):
    from effjax.data import shapes_vqa
    from effjax.models import vlm as vlm_module
    from effjax.pruning import shapes_vlm

    monkeypatch.setattr(shapes_vlm, "encode_images", functools.partial(  # the reference path
        vlm_module.encode_images, attention_impl="dense"))
    vlm = shapes_vlm.load_shapes_vlm()
    params, config = vlm.params, vlm.config
    batch = shapes_vqa.batch([shapes_vqa.example("test", i) for i in range(2)])
    batch["positions"] = shapes_vlm.positions_of(batch, config)
    embeds, positions, mask = shapes_vlm.lm_inputs(params, batch, config=config)
    logits, _ = forward(params["lm"], jnp.asarray(batch["tokens"]), config=config.text,
                        positions=positions, mask=mask, embeds=embeds, **REFERENCE)
    check("shapes-vlm", logits)


def test_diffusion_agent_logits_are_pinned():
    from effjax.agents.train import AGENT_CONFIG, AgentTraining, load_agent
    from effjax.models import bidirectional_forward

    params = load_agent(AgentTraining()).params
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, AGENT_CONFIG.vocab_size, (2, 24)),
                         jnp.int32)
    check("agent-dllm", bidirectional_forward(params, tokens, config=AGENT_CONFIG,
                                                     **REFERENCE))


def test_minilm_embeddings_are_pinned():
    from effjax.memory.encoder import Encoder

    encoder = Encoder()
    check("minilm", encoder.encode(["Caroline went to the LGBTQ support group on 7 May.",
                                    "What did Melanie paint?"]))

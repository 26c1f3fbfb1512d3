"""The QAT train step: fake-quantized student, distillation or CE loss, optax, optional mesh.

The student keeps float32 master weights; every step its matched kernels go through the
straight-through fake quantizer of their format (`fake_quant_params`) and its activations
and KV cache through the recipe's formats inside the forward. The teacher's logits come from
the teacher's parameters in the same step, or from the batch (a cache).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int

from effjax.formats import QArray, fake_quant
from effjax.formats.fake_quant import STE_MODES
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.models.sharding import param_partition_specs
from effjax.qat import losses
from effjax.quant.recipe import Recipe, layer_path

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True, kw_only=True)
class QATConfig:
    """How a QAT (or float) training run steps.

    Attributes:
      recipe: weight / activation / KV-cache formats of the student (None: float training).
      loss: one of `losses.LOSSES` ("ce" needs no teacher).
      temperature: distillation temperature.
      top_k: teacher tokens kept by "topk_kl".
      learning_rate: peak learning rate.
      warmup_steps: linear warm-up from 0 to the peak.
      total_steps: length of the cosine decay (warm-up included).
      end_lr_ratio: the learning rate at total_steps, as a fraction of the peak.
      weight_decay: AdamW's decoupled weight decay.
      b1, b2: Adam's moment decays.
      grad_clip: clip the global gradient norm to this (0: no clipping).
      accum_steps: micro-batches per step (gradients averaged; micro-batch a holds rows
        a, a + accum_steps, ...: each stays spread over the data axis).
      dtype: compute dtype, "float32" or "bfloat16" (master weights stay float32).
      ste: straight-through mode of the weight quantizer, "identity" or "clipped".
    """

    recipe: Recipe | None = None
    loss: str = "forward_kl"
    temperature: float = 1.0
    top_k: int = 16
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    total_steps: int = 1000
    end_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float = 1.0
    accum_steps: int = 1
    dtype: str = "float32"
    ste: str = "identity"

    def __post_init__(self):
        if self.loss not in losses.LOSSES:
            raise ValueError(f"loss must be one of {losses.LOSSES}, got {self.loss!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.ste not in STE_MODES:
            raise ValueError(f"ste must be one of {STE_MODES}, got {self.ste!r}")
        for name in ("total_steps", "accum_steps", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}), "
                             f"got {self.warmup_steps}")
        if self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError(f"learning_rate and temperature must be > 0, got "
                             f"{self.learning_rate} and {self.temperature}")

    @property
    def needs_teacher(self) -> bool:
        return self.loss != "ce"


class TrainState(NamedTuple):
    """What a step carries (and a checkpoint saves).

    Attributes:
      params: float32 master parameters.
      opt_state: the optax state.
      step: () int32 optimizer steps taken.
      rng: (2,) uint32 PRNG key data (advanced by steps that sample, e.g. GRPO).
    """

    params: Params
    opt_state: Any
    step: Int[Array, ""]
    rng: Array


class StepShardings(NamedTuple):
    """Shardings of a step's arguments on a mesh (`step_shardings`)."""

    state: Any
    batch: NamedSharding
    teacher: Any


def make_schedule(config: QATConfig) -> optax.Schedule:
    """Linear warm-up from 0 to the peak learning rate, then cosine decay to the end ratio."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
        decay_steps=config.total_steps, end_value=config.learning_rate * config.end_lr_ratio)


def make_optimizer(config: QATConfig) -> optax.GradientTransformation:
    """AdamW under `make_schedule`, after global-norm gradient clipping."""
    adamw = optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2,
                        weight_decay=config.weight_decay)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw) \
        if config.grad_clip > 0 else adamw


def init_state(params: Params, qat: QATConfig, key: jax.Array, *, config: LMConfig
               ) -> TrainState:
    """A fresh state: float32 copies of params (the step donates its state, so the caller's
    arrays stay usable), the optimizer's initial state, step 0.

    Args:
      params: the student's initial parameters (float, e.g. from `ptq_init`).
      qat: the run's `QATConfig` (its recipe is checked against the shapes here).
      key: the run's PRNG key.
      config: the student's model config.

    Returns:
      A `TrainState`.
    """
    if qat.recipe is not None:
        check_recipe(params, qat.recipe, config=config)
    params = jax.tree.map(lambda a: jnp.array(a, jnp.float32, copy=True), params)  # donated
    return TrainState(params=params, opt_state=make_optimizer(qat).init(params),
                      step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(key))


def check_recipe(params: Params, recipe: Recipe, *, config: LMConfig) -> None:
    """Refuses a recipe whose groups the model's shapes cannot take.

    Every matched kernel's input width, and the head_dim for a KV-cache format, must be a
    multiple of the format's group (a partial group would have no kernel that runs it).

    Raises:
      ValueError: naming the layer, its width and the format.
    """
    matched = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(
            params, is_leaf=lambda x: isinstance(x, QArray)):
        if getattr(path[-1], "key", None) != "kernel":
            continue
        rule = recipe.rule_for(layer_path(path))
        if rule is None:
            continue
        matched += rule.weight is not None
        for what, fmt in (("weight", rule.weight), ("activation", rule.activation)):
            if fmt is not None and fmt.granularity == "group" and leaf.shape[0] % fmt.group_size:
                raise ValueError(
                    f"{layer_path(path)}: {what} format {fmt.name} groups {fmt.group_size} "
                    f"elements along the input axis, which has {leaf.shape[0]}; pick a group "
                    f"size that divides {leaf.shape[0]}")
    kv = recipe.kv_cache
    if kv is not None and kv.granularity == "group" and config.head_dim % kv.group_size:
        raise ValueError(f"kv_cache format {kv.name} groups {kv.group_size} elements, which "
                         f"does not divide head_dim={config.head_dim}")
    if not matched and not any(r.activation for r in recipe.rules) and kv is None:
        raise ValueError(f"the recipe quantizes nothing in these params: patterns "
                         f"{[r.pattern for r in recipe.rules]}")


def fake_quant_params(params: Params, recipe: Recipe, *, ste: str = "identity") -> Params:
    """params with every kernel that the recipe gives a weight format fake-quantized along
    its input axis (straight-through gradients to the float weights).

    Args:
      params: float decoder parameters.
      recipe: the `Recipe`.
      ste: "identity" or "clipped" straight-through estimator.

    Returns:
      A pytree like params whose matched kernels lie on their format's grid.
    """
    def visit(path, leaf):
        if getattr(path[-1], "key", None) != "kernel":
            return leaf
        rule = recipe.rule_for(layer_path(path))
        if rule is None or rule.weight is None:
            return leaf
        return fake_quant(leaf, rule.weight, axis=0, ste=ste)

    return jax.tree_util.tree_map_with_path(visit, params)


def student_logits(params: Params, tokens: Int[Array, "b t"], *, config: LMConfig,
                   qat: QATConfig) -> Float[Array, "b t v"]:
    """The student's logits as the train step computes them (fake-quantized when the
    config has a recipe)."""
    if qat.recipe is not None:
        params = fake_quant_params(params, qat.recipe, ste=qat.ste)
    return forward(params, tokens, config=config, dtype=DTYPES[qat.dtype],
                   recipe=qat.recipe)[0]


def _loss(params, micro, teacher, config: LMConfig, qat: QATConfig):
    tokens = micro["tokens"]
    inputs, targets, mask = tokens[:, :-1], tokens[:, 1:], micro["loss_mask"][:, 1:]
    logits = student_logits(params, inputs, config=config, qat=qat)
    if qat.loss == "ce":
        return losses.cross_entropy(logits, targets, mask)
    if teacher is not None:
        t_logits = jax.lax.stop_gradient(
            forward(teacher, inputs, config=config, dtype=DTYPES[qat.dtype])[0])
        top = losses.teacher_topk(t_logits, qat.top_k) if qat.loss == "topk_kl" else None
    elif qat.loss == "topk_kl":
        t_logits, top = None, (micro["teacher_top_values"], micro["teacher_top_ids"])
    else:
        t_logits = micro["teacher_logits"]
    if qat.loss == "topk_kl":
        return losses.topk_kl(logits, top, mask, qat.temperature)
    fn = {"forward_kl": losses.forward_kl, "reverse_kl": losses.reverse_kl,
          "jsd": losses.jsd}[qat.loss]
    return fn(logits, t_logits, mask, qat.temperature)


def make_train_step(config: LMConfig, qat: QATConfig, *, teacher_config: LMConfig | None = None,
                    shardings: StepShardings | None = None):
    """A jitted `step(state, batch, teacher) -> (state, metrics)`.

    Args:
      config: the student's model config.
      qat: the `QATConfig`.
      teacher_config: the teacher's config (default: the student's); its vocabulary must
        equal the student's.
      shardings: from `step_shardings`, to run on a mesh (data parallel + FSDP); the
        state keeps its sharding from step to step, so nothing recompiles.

    Returns:
      step(state, batch, teacher): batch is {"tokens": (B, T) int32, "loss_mask": (B, T)
      bool} with B = accum_steps x micro-batch, plus the teacher's cached logits
      ("teacher_logits" (B, T - 1, V), or "teacher_top_values" / "teacher_top_ids"
      (B, T - 1, k) for topk_kl) when teacher is None; teacher is the teacher's params or
      None. metrics: {"loss", "grad_norm", "learning_rate"}.
    """
    teacher_config = config if teacher_config is None else teacher_config
    if teacher_config.vocab_size != config.vocab_size:
        raise ValueError(f"teacher and student vocabularies differ: teacher_config.vocab_size="
                         f"{teacher_config.vocab_size}, config.vocab_size={config.vocab_size}; "
                         "distillation compares distributions over the same tokens")
    optimizer, schedule = make_optimizer(qat), make_schedule(qat)

    def step(state: TrainState, batch, teacher):
        a = qat.accum_steps
        rows = batch["tokens"].shape[0]
        if rows % a:
            raise ValueError(f"batch of {rows} rows does not split into accum_steps={a} "
                             "micro-batches")
        micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(rows // a, a, *x.shape[1:]), 0, 1),
                             batch)
        grad_fn = jax.value_and_grad(_loss)

        def body(acc, mb):
            loss, grads = grad_fn(state.params, mb, teacher, config, qat)
            return jax.tree.map(jnp.add, acc, (loss, grads)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
        (loss, grads), _ = jax.lax.scan(body, zero, micro)
        loss, grads = loss / a, jax.tree.map(lambda g: g / a, grads)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            lr = schedule(state.step)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": lr}
        return TrainState(params, opt_state, state.step + 1, state.rng), metrics

    if shardings is None:
        return jax.jit(step, donate_argnums=0)
    replicated = NamedSharding(shardings.batch.mesh, PartitionSpec())
    return jax.jit(step, donate_argnums=0,
                   in_shardings=(shardings.state, shardings.batch, shardings.teacher),
                   out_shardings=(shardings.state, replicated))


def step_shardings(state: TrainState, mesh: Mesh, config: QATConfig, *,
                   teacher: Params | None = None, data_axis: str = "data",
                   model_axis: str = "model") -> StepShardings:
    """Shardings that run a step on `mesh`: batches split over `data_axis`, parameters and
    their optimizer moments FSDP-sharded over it (and heads over `model_axis`), the rest
    replicated.

    Args:
      state: a `TrainState` (for its structure and shapes).
      mesh: a `jax.sharding.Mesh`, e.g. `make_mesh(data=8)`.
      config: the run's `QATConfig` (the optimizer whose state is sharded).
      teacher: the teacher's params, when the step computes its logits.
      data_axis, model_axis: mesh axis names.

    Returns:
      A `StepShardings`.
    """
    def named(specs):
        return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                            is_leaf=lambda x: isinstance(x, PartitionSpec))

    pspecs = param_partition_specs(state.params, mesh, data_axis=data_axis,
                                   model_axis=model_axis)
    ospecs = optax.tree_utils.tree_map_params(
        make_optimizer(config), lambda _, s: s, state.opt_state, pspecs,
        transform_non_params=lambda _: PartitionSpec(),
        is_leaf=lambda x: isinstance(x, PartitionSpec))
    state_specs = TrainState(pspecs, ospecs, PartitionSpec(), PartitionSpec())
    teacher_sh = None if teacher is None else named(
        param_partition_specs(teacher, mesh, data_axis=data_axis, model_axis=model_axis))
    return StepShardings(named(state_specs), NamedSharding(mesh, PartitionSpec(data_axis)),
                         teacher_sh)


def make_mesh(data: int | None = None, model: int = 1) -> Mesh:
    """A (data, model) mesh over this process's (or every process's) devices.

    Args:
      data: size of the data axis (default: all devices / model).
      model: size of the model axis.

    Returns:
      A `Mesh` with axes ("data", "model").
    """
    n = jax.device_count()
    data = n // model if data is None else data
    if data < 1 or model < 1 or data * model > n:
        raise ValueError(f"mesh of data={data} x model={model} needs {data * model} devices; "
                         f"{n} are available")
    devices = jax.devices()[:data * model]
    auto = jax.sharding.AxisType.Auto  # shardings propagate by GSPMD, as in shard_params
    return jax.make_mesh((data, model), ("data", "model"), axis_types=(auto, auto),
                         devices=devices)


def initialize_distributed(**kwargs) -> None:
    """`jax.distributed.initialize` for multi-host pods (call once per process, first).

    On TPU pods and SLURM / Open MPI clusters JAX finds the coordinator itself; elsewhere
    pass coordinator_address, num_processes and process_id. Afterwards `make_mesh` spans
    every host's devices and `global_batch` builds batches from each host's rows.
    """
    jax.distributed.initialize(**kwargs)


def global_batch(local: dict[str, Array], sharding: NamedSharding) -> dict[str, jax.Array]:
    """A global batch from this process's rows (`jax.make_array_from_process_local_data`;
    on one process: the batch placed on the mesh)."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)

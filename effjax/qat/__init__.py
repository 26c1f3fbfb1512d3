"""Quantization-aware training: distillation losses, the sharded optax step, checkpoints,
PTQ initialization, GRPO for quantized policies and the in-house reasoning teacher.

Contents: quantization-aware training. Losses over token masks: `cross_entropy`, `forward_kl`,
`reverse_kl`, `jsd` (generalized, beta), `topk_kl` on the teacher's top-k (`teacher_topk`, what
a logit cache stores), each with a temperature. `QATConfig` (recipe, loss, AdamW with warm-up +
cosine, gradient clipping, gradient accumulation, float32 or bfloat16 compute, identity or
clipped straight-through); `init_state` -> `TrainState(params, opt_state, step, rng)` (the
recipe checked against the shapes: a group that does not divide a layer's width is refused by
name); `make_train_step(config, qat, shardings=...)`: one jitted step, the student's kernels
through `fake_quant_params` (custom_vjp fake quant of any format), activations and KV cache
through the recipe, the teacher's logits from its params in the same step or from the batch; on
a mesh (`make_mesh`, `step_shardings`: batch over `data`, parameters and Adam moments FSDP over
`data` and heads over `model`, `global_batch` from each host's rows, `initialize_distributed` =
`jax.distributed.initialize`). `Checkpointer` (orbax CheckpointManager of {params, opt_state,
step, data position, rng}; `CheckpointError` names an unreadable step and the others,
`fallback=True` goes back to the newest good one) and `fit` (a deterministic batch stream by
position, evaluation curves, resumes where it stopped, bit for bit). `ptq_quantize(params,
config, method, recipe, calib_tokens)`: the RTN / GPTQ / AWQ / SmoothQuant / scale_opt model
(QArray kernels); `ptq_init`: its weights back in float as the student's start
(`dequantize_params`). GRPO: `GRPOConfig`, `rollout` (group sampling from the fake-quantized
policy with the jitted sampler, a reward per completion), `group_advantages`, `grpo_loss`
(clipped ratio, k3 KL to a reference), `make_grpo_step`, `grpo_iteration`. The reasoning
teacher: `load_teacher()` (4-layer decoder, hidden 128, char vocabulary, shipped in
`effjax/data/zoo/arith_teacher/`, trained here by `train_teacher`) and its one-block draft for
speculative decoding (`load_teacher(config=DRAFT_CONFIG)`, `effjax/data/zoo/arith_draft/`,
`train_teacher(config=DRAFT_CONFIG)`: 2,000 steps, 3 minutes), `accuracy`, `generate_solutions`.
"""

from effjax.qat.checkpoints import Checkpointer, CheckpointError
from effjax.qat.grpo import (
    GRPOConfig,
    group_advantages,
    grpo_iteration,
    grpo_loss,
    make_grpo_step,
    rollout,
    sequences,
    token_logprobs,
)
from effjax.qat.init import PTQ_INIT_METHODS, dequantize_params, ptq_init, ptq_quantize
from effjax.qat.loop import fit
from effjax.qat.losses import (
    LOSSES,
    cross_entropy,
    forward_kl,
    jsd,
    reverse_kl,
    teacher_topk,
    topk_kl,
)
from effjax.qat.reasoning import (
    DRAFT_CONFIG,
    TEACHER_CONFIG,
    accuracy,
    generate_solutions,
    load_teacher,
    train_teacher,
)
from effjax.qat.train import (
    QATConfig,
    StepShardings,
    TrainState,
    check_recipe,
    fake_quant_params,
    global_batch,
    init_state,
    initialize_distributed,
    make_mesh,
    make_optimizer,
    make_schedule,
    make_train_step,
    step_shardings,
    student_logits,
)

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "GRPOConfig",
    "LOSSES",
    "PTQ_INIT_METHODS",
    "QATConfig",
    "StepShardings",
    "DRAFT_CONFIG",
    "TEACHER_CONFIG",
    "TrainState",
    "accuracy",
    "check_recipe",
    "cross_entropy",
    "dequantize_params",
    "fake_quant_params",
    "fit",
    "forward_kl",
    "generate_solutions",
    "global_batch",
    "group_advantages",
    "grpo_iteration",
    "grpo_loss",
    "init_state",
    "initialize_distributed",
    "jsd",
    "load_teacher",
    "make_grpo_step",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "ptq_init",
    "ptq_quantize",
    "reverse_kl",
    "rollout",
    "sequences",
    "step_shardings",
    "student_logits",
    "teacher_topk",
    "token_logprobs",
    "topk_kl",
    "train_teacher",
]

"""Reasoning-QAT on the in-house arithmetic teacher: bits x methods x calibration domain."""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # "arith_teacher": the in-house model on the arithmetic task; a zoo name or Hugging Face
    # directory: that model on GSM8K (../shared/data/gsm8k), rows of seq_len tokens
    c.model = "arith_teacher"
    c.seq_len, c.max_new_tokens = 384, 256  # GSM8K only (arithmetic: 64 and 48)
    # weight formats of every attention / MLP projection (embedding and head stay float):
    # INT with a zero point per group (symmetric INT2 would have three levels), and MXFP4
    c.formats = ("int4:32@asym", "int3:32@asym", "int2:32@asym", "int2:64@asym",
                 "int2:128@asym", "mxfp4")
    c.test_problems = 500  # final exact match (levels 1-3, test split)
    c.curve_problems = 128  # learning-curve points (other test problems)
    c.calib_windows, c.calib_window = 64, 64  # GPTQ calibration: 4,096 characters
    # QAT: steps, batch (problems), AdamW, evaluation interval
    c.steps, c.batch_size, c.learning_rate, c.warmup_steps = 300, 32, 3e-4, 20
    c.eval_every = 25
    c.temperature = 1.0
    c.data_seed = 11
    # GRPO after QAT-KD from GPTQ init (aligned): iterations x prompts x group
    c.grpo_iterations, c.grpo_prompts, c.grpo_group = 30, 16, 8
    c.grpo_learning_rate, c.grpo_kl, c.grpo_temperature = 5e-5, 0.02, 1.0
    # (format, learning rate, steps): longer QAT-KD runs from the aligned GPTQ init
    c.long_runs = (("int2:64@asym", 2e-3, 600), ("int2:32@asym", 2e-3, 600),
                   ("int2:128@asym", 2e-3, 600))
    c.timing_steps = 20  # QAT vs float step time, medians over this many steps
    c.cache = "experiments/results/reasoning_qat.json"
    c.checkpoints = ".cache/reasoning_qat"
    c.output = "experiments/results/reasoning_qat.md"
    c.plot = "experiments/results/reasoning_qat.png"
    c.compute = True
    if variant in ("smollm2", "smollm2_tiny"):  # a real model: SmolLM2-135M on GSM8K
        c.model = "smollm2-135m"
        c.formats = ("int4:32@asym", "mxfp4")
        c.test_problems, c.curve_problems = 100, 32
        c.calib_windows, c.calib_window = 16, 256
        c.steps, c.batch_size, c.learning_rate, c.warmup_steps = 100, 8, 2e-5, 10
        c.eval_every = 50
        c.grpo_iterations, c.grpo_prompts, c.grpo_group = 10, 4, 4
        c.long_runs = ()
        c.cache = "experiments/results/reasoning_qat_smollm2.json"
        c.checkpoints = ".cache/reasoning_qat"
        c.output = "experiments/results/reasoning_qat_smollm2.md"
        c.plot = "experiments/results/reasoning_qat_smollm2.png"
    if variant == "smollm2_tiny":
        c.formats = ("int4:32@asym",)
        c.test_problems, c.curve_problems, c.max_new_tokens, c.seq_len = 2, 2, 8, 128
        c.calib_windows, c.calib_window = 2, 64
        c.steps, c.batch_size, c.eval_every, c.warmup_steps = 2, 2, 2, 1
        c.grpo_iterations, c.grpo_prompts, c.grpo_group = 1, 1, 2
        c.timing_steps = 1
        c.cache = "/tmp/effjax_reasoning_qat_smollm2_tiny.json"
        c.checkpoints = "/tmp/effjax_reasoning_qat_smollm2_tiny_ckpt"
        c.output = "/tmp/effjax_reasoning_qat_smollm2_tiny.md"
        c.plot = "/tmp/effjax_reasoning_qat_smollm2_tiny.png"
    if variant == "tiny":
        c.formats = ("int2:32@asym",)
        c.test_problems, c.curve_problems = 16, 8
        c.calib_windows = 8
        c.steps, c.batch_size, c.eval_every, c.warmup_steps = 4, 4, 2, 1
        c.grpo_iterations, c.grpo_prompts, c.grpo_group = 1, 2, 2
        c.long_runs = (("int2:32@asym", 1e-3, 2),)
        c.timing_steps = 2
        c.cache = "/tmp/effjax_reasoning_qat_tiny.json"
        c.checkpoints = "/tmp/effjax_reasoning_qat_tiny_ckpt"
        c.output = "/tmp/effjax_reasoning_qat_tiny.md"
        c.plot = "/tmp/effjax_reasoning_qat_tiny.png"
    return c

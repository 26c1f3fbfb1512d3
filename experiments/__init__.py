"""Experiments: each study is `python -m experiments.<name> [--config=configs/<name>.py[:tiny]]`
and writes its report to `experiments/results/<name>.md` (with `.json` cells and a `.png`).

Contents: the long quickstart tables (`quickstart_full`), speculative decoding (`speculative`:
rules x drafts on two pairs: SmolLM2-135M with its MXFP4 and early-exit self-drafts on prose and
arithmetic, and the arithmetic teacher with its one-block draft and INT2 self-draft on the
task's test problems and on longer chains; AutoJudge mined and trained per draft; the KL judge
compared with it at matched tokens per call), the CPU benchmarks (`bench_lm`: model throughput;
`bench_formats`: quantize + dequantize per format against qwix and torchao; `bench_gptq`:
whole-model GPTQ and one layer against qwix), SwiftMem on LoCoMo and at 10^4-10^6 episodes
(`swiftmem`), QuantClaw routing on a mixed agent workload (`quantclaw`), the MXFP PTQ study
(`mxfp_ptq_study`: methods x (setting, format) cells, resumable from a JSON cache), BATQuant
against the baselines with its ablations (`batquant`), FreeAct against RTN / QuaRot / one shared
transform on the diffusion agent and the shapes VLM with an energy-threshold ablation over three
calibration seeds (`freeact`), the HiFloat study (`hifloat_study`: tensor statistics, 8- and
4-bit formats in W8A8 / KV8 / W4A16 / W4A4 / KV4, PTQ methods under HiF4 / HiF8, the paper's
three claims), diffusion vs autoregressive tool-use agents (`dllm_agent`: same architecture and
trajectories; success, rounds, tool calls, malformed calls, forward passes, batched and
one-at-a-time wall time; aligned vs unaligned masks, with and without tool-call rows), HAWK and
the visual token pruning baselines on the shapes VLM (`hawk`: accuracy retention at 50-90%
pruning on test / hard, head weights from calibration, prefill / end-to-end latency and KV
bytes), Reasoning-QAT (`reasoning_qat`: INT4/3/2 and MXFP4 x RTN, GPTQ, QAT-CE, QAT-KD from RTN
and GPTQ inits, GRPO x aligned / misaligned calibration on the arithmetic teacher, learning
curves, step time, the four findings) and the accelerator script `bench_kernels`, driven by
ml-collections configs (`--config=configs/<name>.py[:tiny]`). A study file holds only its study:
the cell cache, timing, noise bands, report rendering and the entry point are
`experiments.common`.
"""


"""One command: `python -m effjax.serve [--model smollm2-135m] [--port 8000]
[--tiers 4bit=mxfp4,8bit=mxfp8_e4m3,16bit=bf16] [--embedding-detector]`.

Loads the model, builds its precision variants and serves the OpenAI-compatible endpoint
through the QuantClaw router (point an agent's base URL at http://host:port/v1).
"""

import argparse

import effjax
from effjax.agents import quantclaw
from effjax.serve import serve


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m effjax.serve", description=__doc__)
    p.add_argument("--model", default="smollm2-135m", help="zoo name, HF folder or .gguf")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tiers", default="4bit=mxfp4,8bit=mxfp8_e4m3,16bit=bf16",
                   help="tier=format pairs (format: an effjax format name or bf16)")
    p.add_argument("--embedding-detector", action="store_true",
                   help="back the rules with MiniLM task prototypes")
    p.add_argument("--max-pending", type=int, default=16)
    args = p.parse_args(argv)
    try:
        tiers = dict(pair.split("=", 1) for pair in args.tiers.split(","))
    except ValueError:
        p.error(f"--tiers: expected tier=format pairs separated by commas, got {args.tiers!r}")
    lm = effjax.load(args.model)
    embedding = None
    if args.embedding_detector:
        from effjax.memory import Encoder

        embedding = quantclaw.EmbeddingDetector(Encoder())
    router = quantclaw.PrecisionRouter(
        quantclaw.build_variants(lm.params, tiers), lm.config, lm.tokenizer,
        detector=quantclaw.TaskDetector(quantclaw.RuleDetector(), embedding),
        policy=quantclaw.Policy(order=tuple(tiers)))
    serve(router, model=args.model, host=args.host, port=args.port,
          max_pending=args.max_pending)


if __name__ == "__main__":
    main()

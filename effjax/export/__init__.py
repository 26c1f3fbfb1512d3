"""Writing effjax models where other tools run them.

Contents: `export_gguf(lm, path, params=..., requantize=..., float_type=...)` -> one
`TensorRecord` per tensor (llama and gemma3 GGUF files through the `gguf` package; MXFP4
kernels bit for bit, other quantized kernels re-quantized to a GGML type, each tensor's
difference from effjax's values recorded; `EXACT`, `GGML_TYPES`). The files load back with
`effjax.models.load_gguf(path, quantized=True)`, MXFP4 and Q8_0 kernels as `QArray`s.
"""

from effjax.export.gguf import EXACT, GGML_TYPES, TensorRecord, export_gguf

__all__ = ["EXACT", "GGML_TYPES", "TensorRecord", "export_gguf"]

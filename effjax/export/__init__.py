"""Writing effjax models where other tools run them.

Contents: `export_gguf(lm, path, params=..., requantize=..., float_type=...)` (llama and
gemma3 GGUF files through the `gguf` package; MXFP4 kernels bit for bit, other quantized
kernels re-quantized to a GGML type; `EXACT`, `GGML_TYPES`) and `export_hf(lm, path,
params=..., dtype=...)` (a Hugging Face directory with compressed-tensors weights that
`transformers` loads: INT per tensor / channel / group, symmetric or not, FP8, NVFP4, MXFP4,
MXFP6, MXFP8; `FLOAT_DTYPES`). Both return one `TensorRecord` per tensor: what was written
and its largest difference from effjax's values. The files load back with
`effjax.models.load(path, quantized=True)`, kernels of the exact-match types as `QArray`s.
"""

from effjax.export.common import TensorRecord
from effjax.export.gguf import EXACT, GGML_TYPES, export_gguf
from effjax.export.hf import FLOAT_DTYPES, export_hf

__all__ = ["EXACT", "FLOAT_DTYPES", "GGML_TYPES", "TensorRecord", "export_gguf", "export_hf"]

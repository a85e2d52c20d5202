"""layermap: where in a transformer LLM does something happen?

A layers x modules attribution matrix over the seven linear modules of a
Llama-family block (attn.q attn.k attn.v attn.o mlp.up mlp.down mlp.gate),
computed by liblayermap (the engine of the `layermap` command) -- the same
numbers as the CLI, with numpy (and pandas, when installed) out of it.

    >>> import layermap
    >>> m = layermap.attribute("model.gguf", "calib.txt")   # Matrix
    >>> m.to_pandas()                                        # layers x modules

Importing sets OPENBLAS_CORETYPE (the best core this CPU supports) and
OMP_WAIT_POLICY=passive in os.environ when they are unset, before the
library (and OpenBLAS) loads: the choices the CLI makes by re-executing itself.
"""
from . import _lib  # first: sets the environment, then loads liblayermap (and OpenBLAS)
from ._errors import (ArgumentError, CanceledError, CorruptFileError, EncodingError, Error, FileError,
                      InternalError, OutOfMemoryError, ShapeError, UnsupportedError)
from ._api import Perplexity, attribute, blas_core, detokenize, diff, generate, kernel, pieces, ppl, tokenize
from ._matrix import Matrix, plot
from ._model import Model, TensorInfo, open
from .version import __version__

MODULES = _lib.MODULES
METHODS = _lib.METHODS
DIFF_METRICS = _lib.DIFF_METRICS

__all__ = [
    "open", "Model", "TensorInfo", "diff", "attribute", "ppl", "Perplexity", "tokenize", "detokenize", "pieces",
    "generate", "Matrix", "plot", "kernel", "blas_core", "MODULES", "METHODS", "DIFF_METRICS", "__version__",
    "Error", "FileError", "CorruptFileError", "UnsupportedError", "OutOfMemoryError", "ArgumentError",
    "ShapeError", "EncodingError", "InternalError", "CanceledError",
]

"""Model: an opened checkpoint (HF directory or GGUF file) and its tokenizer."""
from __future__ import annotations

import ctypes
import os
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

from . import _lib
from ._run import check

PathLike = Union[str, "os.PathLike[str]"]

_ACTS = {0: "silu", 1: "gelu-tanh"}


class TensorInfo(NamedTuple):
    """One tensor of a model file: its name as stored, dtype ("F32", "Q4_K", ...) and
    shape in PyTorch order (rows first)."""
    name: str
    dtype: str
    shape: Tuple[int, ...]


class Model:
    """An opened model (layermap.open). The weights are memory-mapped, nothing is
    read until a computation needs it. Close it (or use ``with``) to unmap the files."""

    def __init__(self, path: PathLike) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"model path must be a str or os.PathLike, not {type(path).__name__}")
        self._p = ctypes.POINTER(_lib.lm_model)()
        self._tok = ctypes.c_void_p()
        err = _lib.lm_err()
        check(_lib.lib.lm_model_open(ctypes.byref(self._p), os.fsencode(os.fspath(path)), ctypes.byref(err)), err)

    # -- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Free the tokenizer and unmap the files (idempotent)."""
        if getattr(self, "_tok", None):
            _lib.lib.lm_tokenizer_free(self._tok)
            self._tok = ctypes.c_void_p()
        if getattr(self, "_p", None):
            _lib.lib.lm_model_close(self._p)
            self._p = ctypes.POINTER(_lib.lm_model)()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return not self._p

    def _c(self) -> "ctypes._Pointer[_lib.lm_model]":
        if not self._p:
            raise ValueError("the model is closed")
        return self._p

    def _tokenizer(self) -> ctypes.c_void_p:
        if not self._tok:
            err = _lib.lm_err()
            check(_lib.lib.lm_tokenizer_open(ctypes.byref(self._tok), self._c(), ctypes.byref(err)), err)
        return self._tok

    # -- description -------------------------------------------------------------
    @property
    def path(self) -> str:
        """The path as given."""
        return os.fsdecode(self._c().contents.path)

    @property
    def name(self) -> str:
        """Short name (directory or file basename), as in figure titles and matrix metadata."""
        return self._c().contents.name.decode("utf-8", "replace")

    @property
    def format(self) -> str:
        """"gguf" or "safetensors"."""
        return self._c().contents.format.decode()

    @property
    def arch(self) -> str:
        """Architecture: "llama", "mistral", "qwen2", "qwen3" or "gemma3"."""
        return _lib.lib.lm_arch_name(self._c().contents.cfg.arch).decode()

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks (rows of every matrix)."""
        return int(self._c().contents.cfg.n_layer)

    @property
    def vocab(self) -> int:
        """Vocabulary size."""
        return int(self._c().contents.cfg.vocab)

    @property
    def config(self) -> Dict[str, Any]:
        """The model description (lm_config) as a dict: arch, n_layer, dim, n_head, ..."""
        cfg = self._c().contents.cfg
        out: Dict[str, Any] = {}
        for field in _lib.lm_config._fields_:
            name, typ = field[0], field[1]
            v = getattr(cfg, name)
            out[name] = float(v) if typ is ctypes.c_float else int(v)
        out["arch"] = self.arch
        out["act"] = _ACTS.get(cfg.act, str(cfg.act))
        for k in ("tie_embeddings", "has_qkv_bias", "has_qk_norm", "has_post_norms", "norm_add_one", "add_bos"):
            out[k] = bool(out[k])
        return out

    @property
    def tensors(self) -> Dict[str, TensorInfo]:
        """Every tensor of the model, in file order: name -> TensorInfo(name, dtype, shape)."""
        m = self._c().contents
        out: Dict[str, TensorInfo] = {}
        for i in range(m.n_tensors):
            t = m.tensors[i]
            name = t.name.decode("utf-8", "replace")
            dtype = t.file_type.decode() or _lib.lib.lm_dtype_name(t.dtype).decode()
            out[name] = TensorInfo(name, dtype, tuple(int(t.shape[k]) for k in range(t.ndim)))
        return out

    def module_params(self, layer: int, module: Union[int, str]) -> int:
        """Parameters (rows x cols) of one module of one layer."""
        j = _lib.MODULES.index(module) if isinstance(module, str) else int(module)
        if not 0 <= layer < self.n_layers or not 0 <= j < len(_lib.MODULES):
            raise ValueError(f"no module {module!r} in layer {layer}")
        return int(_lib.lib.lm_model_module_params(self._c(), layer, j))

    def __repr__(self) -> str:
        if self.closed:
            return "<layermap.Model (closed)>"
        return f"<layermap.Model {self.name}: {self.arch}, {self.n_layers} layers, {self.format}>"


def open(path: PathLike) -> Model:  # noqa: A001 (mirrors the CLI's "open a model")
    """Open a model: an HF directory (config.json + safetensors) or a .gguf file."""
    return Model(path)


class _Using:
    """A Model given, or one opened from a path for the length of a call."""

    def __init__(self, model: Union[Model, PathLike]) -> None:
        if isinstance(model, Model):
            self.model, self.owned = model, False
            model._c()
        elif isinstance(model, (str, os.PathLike)):
            self.model, self.owned = Model(model), True
        else:
            raise TypeError(f"model must be a layermap.Model or a path, not {type(model).__name__}")

    def __enter__(self) -> Model:
        return self.model

    def __exit__(self, *exc: Any) -> None:
        if self.owned:
            self.model.close()


def _opt_int(name: str, v: Optional[int], lo: int, none_ok: bool = True) -> int:
    """Check an integer option before any C call; None -> 0."""
    if v is None and none_ok:
        return 0
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an integer, not {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, not {v}")
    return v

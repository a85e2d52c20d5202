"""Matrix: a layers x 7 result, its files (the CLI's CSV and JSON) and its figures."""
from __future__ import annotations

import base64
import ctypes
import html
import os
import re
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._run import check
from .version import __version__

PathLike = Union[str, "os.PathLike[str]"]
NORMS = ("none", "layer", "module", "global")


def _fs(path: PathLike) -> bytes:
    return os.fsencode(os.fspath(path))


class Matrix:
    """A layers x modules matrix of one method, as the CLI writes it.

    values   numpy float64 array of shape (layers, 7); NaN = no value
    layers   number of layers (rows)
    modules  the column names, in the canonical order
             ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate")
    meta     dict: model, method, norm (normalisation), note, tokens, loss (mean NLL per
             predicted token), version (of layermap), and per method extras (ig_gap, ...)
    layer_extra       optional per-layer vector (act-sq/wanda: block influence) or None
    layer_extra_name  its name ("block-influence") or ""
    se       optional (layers, 7) standard error of each cell over the run's samples, or None;
             meta["split_half"] (the odd/even samples' Spearman correlation) and
             meta["samples"] go with it (attribute's data methods)
    """

    modules: Tuple[str, ...] = _lib.MODULES

    def __init__(self, values: Any, meta: Optional[Dict[str, Any]] = None,
                 layer_extra: Optional[Any] = None, layer_extra_name: str = "", se: Optional[Any] = None) -> None:
        v = np.array(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != len(self.modules) or v.shape[0] < 1:
            raise ValueError(f"values must have shape (layers, {len(self.modules)}), not {v.shape}")
        self.values: np.ndarray = v
        m: Dict[str, Any] = {"model": "", "method": "", "norm": "none", "note": "", "tokens": None, "loss": None,
                             "version": __version__}
        m.update(meta or {})
        if m["norm"] not in NORMS:
            raise ValueError(f"meta['norm'] must be one of {NORMS}, not {m['norm']!r}")
        self.meta: Dict[str, Any] = m
        self.layer_extra: Optional[np.ndarray] = None
        if layer_extra is not None:
            e = np.array(layer_extra, dtype=np.float64)
            if e.shape != (v.shape[0],):
                raise ValueError(f"layer_extra must have shape ({v.shape[0]},), not {e.shape}")
            self.layer_extra = e
        self.layer_extra_name = layer_extra_name
        self.se: Optional[np.ndarray] = None
        if se is not None:
            s = np.array(se, dtype=np.float64)
            if s.shape != v.shape:
                raise ValueError(f"se must have the shape of values {v.shape}, not {s.shape}")
            self.se = s

    # -- shape ---------------------------------------------------------------
    @property
    def layers(self) -> int:
        """Number of layers (rows)."""
        return int(self.values.shape[0])

    @property
    def shape(self) -> Tuple[int, int]:
        return (self.layers, len(self.modules))

    def __getitem__(self, key: Any) -> Any:
        """m[layer, "mlp.up"] or m[layer, 4]; m["mlp.up"] is the column."""
        if isinstance(key, str):
            return self.values[:, self.modules.index(key)]
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], str):
            return self.values[key[0], self.modules.index(key[1])]
        return self.values[key]

    def __repr__(self) -> str:
        return (f"<layermap.Matrix {self.meta.get('method') or '?'} of {self.meta.get('model') or '?'}: "
                f"{self.layers} layers x {len(self.modules)} modules, norm {self.meta['norm']}>")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Matrix):
            return NotImplemented
        return bool(np.array_equal(self.values, other.values, equal_nan=True))

    __hash__ = None  # type: ignore[assignment]

    # -- C conversion ----------------------------------------------------------
    def _to_c(self) -> "ctypes._Pointer[_lib.lm_matrix]":
        """A new lm_matrix (the caller frees it with lm_matrix_free)."""
        p = _lib.lib.lm_matrix_new(self.layers)
        if not p:
            raise MemoryError("layermap: cannot allocate a matrix")
        c = p.contents
        flat = np.ascontiguousarray(self.values).ravel()
        ctypes.memmove(c.v, flat.ctypes.data, flat.nbytes)
        for field, size in (("model", 256), ("method", 64), ("norm", 16), ("note", 512)):
            raw = str(self.meta.get(field) or "").encode()[: size - 1]
            setattr(c, field, raw)
        if self.layer_extra is not None:
            buf = _lib.libc.malloc(self.layers * 8)
            if not buf:
                _lib.lib.lm_matrix_free(p)
                raise MemoryError("layermap: cannot allocate a matrix")
            ctypes.memmove(buf, np.ascontiguousarray(self.layer_extra).ctypes.data, self.layers * 8)
            c.layer_extra = ctypes.cast(buf, ctypes.POINTER(ctypes.c_double))
            c.layer_extra_name = self.layer_extra_name.encode()[:63]
        if self.se is not None:
            nb = self.layers * len(self.modules) * 8
            buf = _lib.libc.malloc(nb)
            if not buf:
                _lib.lib.lm_matrix_free(p)
                raise MemoryError("layermap: cannot allocate a matrix")
            ctypes.memmove(buf, np.ascontiguousarray(self.se).ctypes.data, nb)
            c.se = ctypes.cast(buf, ctypes.POINTER(ctypes.c_double))
        sh = self.meta.get("split_half")
        c.split_half = float("nan") if sh is None else float(sh)
        c.n_samples = int(self.meta.get("samples") or 0)
        return p

    @classmethod
    def _from_c(cls, p: "ctypes._Pointer[_lib.lm_matrix]", meta: Optional[Dict[str, Any]] = None) -> "Matrix":
        """A copy of an lm_matrix (which stays the caller's to free)."""
        c = p.contents
        n = c.n_layer
        values = np.ctypeslib.as_array(c.v, shape=(n * len(cls.modules),)).copy().reshape(n, len(cls.modules))
        m = {"model": c.model.decode("utf-8", "replace"), "method": c.method.decode("utf-8", "replace"),
             "norm": c.norm.decode() or "none", "note": c.note.decode("utf-8", "replace")}
        tok = re.search(r"(?:^| )tokens=(\d+)", m["note"])
        m["tokens"] = int(tok.group(1)) if tok else None
        if c.n_samples or c.se:
            m["split_half"] = None if c.split_half != c.split_half else c.split_half  # NaN: none
            m["samples"] = c.n_samples
        m.update(meta or {})
        extra = np.ctypeslib.as_array(c.layer_extra, shape=(n,)).copy() if c.layer_extra else None
        se = np.ctypeslib.as_array(c.se, shape=(n * len(cls.modules),)).copy().reshape(n, len(cls.modules)) \
            if c.se else None
        return cls(values, m, extra, c.layer_extra_name.decode("utf-8", "replace"), se)

    # -- normalisation ---------------------------------------------------------
    def normalize(self, norm: str = "layer") -> "Matrix":
        """A new matrix normalised by "layer" (rows sum to 1), "module" (columns sum to 1),
        "global" (the matrix sums to 1) or "none"; sums are of absolute values, so
        signs are kept, and an all-zero group stays 0 (lm_matrix_normalize)."""
        if not isinstance(norm, str):
            raise TypeError(f"norm must be a string, not {type(norm).__name__}")
        code = ctypes.c_int()
        if _lib.lib.lm_norm_parse(norm.encode(), ctypes.byref(code)):
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        p = self._to_c()
        try:
            err = _lib.lm_err()
            check(_lib.lib.lm_matrix_normalize(p, code.value, ctypes.byref(err)), err)
            out = Matrix._from_c(p, {k: v for k, v in self.meta.items() if k not in ("model", "method", "note",
                                                                                       "norm")})
        finally:
            _lib.lib.lm_matrix_free(p)
        return out

    # -- pandas ----------------------------------------------------------------
    def to_pandas(self) -> Any:
        """A pandas DataFrame: index "layer" (0..layers-1), one column per module in
        canonical order; the same frame as pandas.read_csv(the CLI's CSV, index_col="layer")."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Matrix.to_pandas needs pandas (pip install pandas)") from e
        df = pd.DataFrame(self.values.copy(), index=pd.RangeIndex(self.layers, name="layer"),
                          columns=list(self.modules))
        df.attrs.update(self.meta)
        return df

    # -- files -----------------------------------------------------------------
    def to_csv(self, path: PathLike) -> None:
        """Write the CLI's CSV (numbers only, shortest round-trip digits), atomically."""
        self._write(path, _lib.lib.lm_matrix_write_csv)

    def to_json(self, path: PathLike) -> None:
        """Write the CLI's JSON (numbers and metadata), atomically."""
        self._write(path, _lib.lib.lm_matrix_write_json)

    def _write(self, path: PathLike, fn: Any) -> None:
        p = self._to_c()
        try:
            err = _lib.lm_err()
            check(fn(p, _fs(path), ctypes.byref(err)), err)
        finally:
            _lib.lib.lm_matrix_free(p)

    @classmethod
    def read(cls, path: PathLike) -> "Matrix":
        """Read a matrix the CLI (or to_csv/to_json) wrote: .json, else CSV. A CSV has no
        metadata: the model is the file's stem, method and note are empty."""
        fn = _lib.lib.lm_matrix_read_json if os.fspath(path).lower().endswith(".json") else \
            _lib.lib.lm_matrix_read_csv
        out = ctypes.POINTER(_lib.lm_matrix)()
        err = _lib.lm_err()
        check(fn(ctypes.byref(out), _fs(path), ctypes.byref(err)), err)
        try:
            return cls._from_c(out)
        finally:
            _lib.lib.lm_matrix_free(out)

    # -- figures ---------------------------------------------------------------
    def plot(self, path: PathLike, **figure_options: Any) -> None:
        """Draw the heatmap to path (.png, .svg or .pdf) with the C plotter, atomically.

        figure_options: title (str), label_step (int, 0 = auto), center (float; default the
        median), vmin and vmax (floats, both or neither).
        """
        plot([self], path, **figure_options)

    def _png(self) -> bytes:
        fd, tmp = tempfile.mkstemp(suffix=".png", prefix="layermap-")
        os.close(fd)
        try:
            self.plot(tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            os.unlink(tmp)

    def _repr_png_(self) -> bytes:
        """The heatmap, for IPython/Jupyter."""
        return self._png()

    def _repr_html_(self) -> str:
        """The heatmap as an inline image with a one-line caption, for Jupyter."""
        data = base64.b64encode(self._png()).decode()
        return (f'<div><img src="data:image/png;base64,{data}" alt="layermap heatmap"/>'
                f"<div><small>{html.escape(repr(self))}</small></div></div>")


def plot(matrices: Sequence[Matrix], path: PathLike, title: Optional[str] = None, label_step: int = 0,
         center: Optional[float] = None, vmin: Optional[float] = None, vmax: Optional[float] = None,
         cols: int = 0) -> None:
    """Draw one matrix, or a grid of several with a shared colour scale (as `layermap plot`),
    to path (.png, .svg or .pdf)."""
    ms = list(matrices)
    if not ms or not all(isinstance(m, Matrix) for m in ms):
        raise TypeError("plot needs one or more layermap.Matrix")
    if (vmin is None) != (vmax is None):
        raise ValueError("give both vmin and vmax, or neither")
    if vmin is not None and not float(vmin) < float(vmax):  # type: ignore[arg-type]
        raise ValueError(f"vmin ({vmin}) must be below vmax ({vmax})")
    for name, v in (("label_step", label_step), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, not {v!r}")
    if title is not None and not isinstance(title, str):
        raise TypeError("title must be a string")
    o = _lib.lm_plot_opts()
    _lib.lib.lm_plot_opts_default(ctypes.byref(o))
    title_b = title.encode() if title is not None else None
    o.title = title_b
    o.label_step = label_step
    o.cols = cols
    if center is not None:
        o.has_center, o.center = 1, float(center)
    if vmin is not None:
        o.has_range, o.vmin, o.vmax = 1, float(vmin), float(vmax)  # type: ignore[arg-type]
    cs = []
    try:
        for m in ms:
            cs.append(m._to_c())
        arr = (ctypes.POINTER(_lib.lm_matrix) * len(cs))(*cs)
        err = _lib.lm_err()
        check(_lib.lib.lm_plot_write(arr, len(cs), ctypes.byref(o), _fs(path), ctypes.byref(err)), err)
    finally:
        for c in cs:
            _lib.lib.lm_matrix_free(c)

"""The commands of the CLI as functions: diff, attribute, ppl, tokenize, generate."""
from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._matrix import Matrix
from ._model import Model, PathLike, _opt_int, _Using
from ._run import Call, ProgressArg, check, check_progress, run

Data = Union[PathLike, str, bytes, Sequence[str], Sequence[Dict[str, str]], Sequence[Any], np.ndarray]

_TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".md", ".text")


def _err() -> _lib.lm_err:
    return _lib.lm_err()


# ---------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------

def diff(base: Union[Model, PathLike], ft: Union[Model, PathLike],
         metrics: Sequence[str] = ("rel", "density", "cosine", "rank"), tol: float = 0.0, rank_k: int = 64,
         threads: Optional[int] = None, oversample: int = 8, power_iters: int = 2, seed: Optional[int] = None,
         progress: ProgressArg = None) -> Dict[str, Matrix]:
    """Compare two checkpoints per layer and module (`layermap diff`, docs/METHODS.md).

    metrics: any of "rel", "density", "cosine", "rank" (or "all"); the rank's randomized
    SVD runs only when "rank" is asked for. Returns {metric: Matrix} in the order asked.
    A KeyboardInterrupt is raised when the running diff ends (lm_diff has no cancel point).
    """
    if isinstance(metrics, str):
        metrics = _lib.DIFF_METRICS if metrics == "all" else (metrics,)
    check_progress(progress)
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError("metrics is empty")
    for k in metrics:
        if k not in _lib.DIFF_METRICS:
            raise ValueError(f"unknown metric {k!r} (one of {', '.join(_lib.DIFF_METRICS)})")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics repeated: {metrics}")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0 or math.isinf(tol):
        raise ValueError(f"tol must be a finite number >= 0, not {tol!r}")
    rank_k = _opt_int("rank_k", rank_k, 1, none_ok=False)
    oversample = _opt_int("oversample", oversample, 0, none_ok=False)
    power_iters = _opt_int("power_iters", power_iters, 0, none_ok=False)
    nthreads = _opt_int("threads", threads, 1)
    if seed is not None:
        _opt_int("seed", seed, 0, none_ok=False)
    o = _lib.lm_diff_opts()
    _lib.lib.lm_diff_opts_default(ctypes.byref(o))
    o.tol = float(tol)
    o.rank_k = rank_k if "rank" in metrics else 0  # 0: no SVD passes (as the CLI)
    o.oversample, o.power_iters, o.threads = oversample, power_iters, nthreads
    if seed is not None:
        o.seed = seed
    with _Using(base) as mb, _Using(ft) as mf:
        def work(call: Call) -> Dict[str, Matrix]:
            o.progress, o.progress_ctx = call.c_progress, None
            out = (ctypes.POINTER(_lib.lm_matrix) * _lib.LM_DIFF_COUNT)()
            err = _err()
            rc = _lib.lib.lm_diff(mb._c(), mf._c(), ctypes.byref(o), out, ctypes.byref(err))
            try:
                check(rc, err)
                res = {}
                for k in metrics:
                    res[k] = Matrix._from_c(out[_lib.DIFF_METRICS.index(k)])
                return res
            finally:
                for p in out:
                    if p:
                        _lib.lib.lm_matrix_free(p)
        return run(work, progress)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

def _looks_like_path(s: str) -> bool:
    """A str is a file name when it names an existing file, or when it is one short
    line without spaces ending like a data file (so a misspelt name is an error, not text)."""
    if "\n" in s or len(s) > 4096:
        return False
    if os.path.isfile(s):
        return True
    return not any(c.isspace() for c in s) and s.lower().endswith(_TEXT_SUFFIXES)


def _describe(data: Data) -> str:
    """What the matrix note says for data= (the path, as the CLI)."""
    if isinstance(data, os.PathLike):
        return os.fspath(data)  # type: ignore[return-value]
    if isinstance(data, str) and _looks_like_path(data):
        return data
    if isinstance(data, (str, bytes)):
        return "(text)"
    n = len(data)  # type: ignore[arg-type]
    first = data[0] if n else None  # type: ignore[index]
    kind = "texts" if isinstance(first, str) else "prompts" if isinstance(first, dict) else "id sequences"
    return f"({n} {kind})"


def _check_data(data: Data) -> Tuple[str, Any]:
    """Classify and check data before any C call: ("path", bytes), ("text", bytes),
    ("texts", [bytes]), ("pairs", ([bytes], [bytes])) or ("ids", [int32 arrays])."""
    if isinstance(data, os.PathLike):
        return "path", os.fsencode(os.fspath(data))
    if isinstance(data, str):
        if _looks_like_path(data):
            return "path", os.fsencode(data)
        return "text", data.encode("utf-8", "surrogateescape")
    if isinstance(data, (bytes, bytearray)):
        return "text", bytes(data)
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"an array of token ids must be 2-D (sequences x tokens), not {data.ndim}-D")
        data = list(data)
    if not isinstance(data, (list, tuple)):
        raise TypeError("data must be a path, a str, bytes, a list of str, a list of {'prompt', 'completion'} "
                        f"dicts or a list of token-id arrays, not {type(data).__name__}")
    if not data:
        raise ValueError("data is an empty list")
    if all(isinstance(x, str) for x in data):
        return "texts", [x.encode("utf-8", "surrogateescape") for x in data]
    if all(isinstance(x, dict) for x in data):
        if all("text" in x and isinstance(x["text"], str) and "prompt" not in x for x in data):
            return "texts", [x["text"].encode("utf-8", "surrogateescape") for x in data]
        for i, x in enumerate(data):
            if not (isinstance(x.get("prompt"), str) and isinstance(x.get("completion"), str)):
                raise ValueError(f"data[{i}]: expected string 'prompt' and 'completion' (or 'text' in every record)")
        return "pairs", ([x["prompt"].encode("utf-8", "surrogateescape") for x in data],
                         [x["completion"].encode("utf-8", "surrogateescape") for x in data])
    seqs = []
    for i, x in enumerate(data):
        if isinstance(x, (str, bytes, dict)):
            raise TypeError("data mixes texts, records and token ids")
        a = np.asarray(x)
        if a.ndim != 1:
            raise ValueError(f"data[{i}]: token ids must be 1-D, not shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"data[{i}]: token ids must be integers, not {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 2**31 - 1):
            raise ValueError(f"data[{i}]: token ids must be in 0..2^31-1")
        seqs.append(np.ascontiguousarray(a, dtype=np.int32))
    return "ids", seqs


def _dataset(model: Model, kind: str, payload: Any, seq_len: int, max_tokens: int) -> Any:
    """Build the lm_dataset (the caller frees it with lm_dataset_free)."""
    o = _lib.lm_data_opts(seq_len, max_tokens)
    d = ctypes.POINTER(_lib.lm_dataset)()
    err = _err()
    L = _lib.lib
    if kind == "path":
        rc = L.lm_dataset_load(ctypes.byref(d), payload, model._tokenizer(), ctypes.byref(o), ctypes.byref(err))
    elif kind == "text":
        rc = L.lm_dataset_from_text(ctypes.byref(d), payload, len(payload), model._tokenizer(), ctypes.byref(o),
                                    ctypes.byref(err))
    elif kind in ("texts", "pairs"):
        texts, comps = (payload, None) if kind == "texts" else payload
        n = len(texts)
        tp = (ctypes.c_char_p * n)(*texts)
        tl = (ctypes.c_size_t * n)(*map(len, texts))
        cp = (ctypes.c_char_p * n)(*comps) if comps is not None else None
        cl = (ctypes.c_size_t * n)(*map(len, comps)) if comps is not None else None
        rc = L.lm_dataset_from_texts(ctypes.byref(d), tp, tl, cp, cl, n, model._tokenizer(), ctypes.byref(o),
                                     ctypes.byref(err))
    else:
        n = len(payload)
        ptrs = (ctypes.POINTER(ctypes.c_int32) * n)(*[a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
                                                      for a in payload])
        lens = (ctypes.c_int * n)(*[a.size for a in payload])
        rc = L.lm_dataset_from_ids(ctypes.byref(d), ptrs, lens, n, model.vocab, ctypes.byref(o), ctypes.byref(err))
    check(rc, err)
    return d


def _compute(compute: str) -> int:
    """--compute: "f32" (default, the reference), "bf16", "bf16-ref", "auto" -> LM_COMPUTE_*."""
    if not isinstance(compute, str):
        raise TypeError(f"compute must be a str, not {type(compute).__name__}")
    c = int(_lib.lib.lm_compute_parse(compute.encode()))
    if c < 0:
        raise ValueError(f"compute: {compute!r} is not one of f32, bf16, bf16-ref, auto")
    return c


def _engine(model: Model, d: Any, batch: int, threads: int, ggml_compat: bool = False, act_cache_mb: int = 0,
            weight_cache_mb: int = 0, compute: int = 0) -> ctypes.c_void_p:
    ds = d.contents
    longest = max(ds.seqs[s].n for s in range(ds.n_seq))
    eo = _lib.lm_engine_opts(threads=threads, max_seq=longest, max_batch=min(batch, ds.n_seq),
                             weight_cache_bytes=weight_cache_mb << 20, ggml_compat=int(ggml_compat),
                             act_cache_bytes=act_cache_mb << 20, compute=compute)
    e = ctypes.c_void_p()
    err = _err()
    check(_lib.lib.lm_engine_new(ctypes.byref(e), model._c(), ctypes.byref(eo), ctypes.byref(err)), err)
    return e


# ---------------------------------------------------------------------------
# attribute
# ---------------------------------------------------------------------------

def _methods(method: Union[str, Sequence[str]]) -> Tuple[List[str], bool]:
    """The method list (act-stats expanded) and whether a dict is returned."""
    many = not isinstance(method, str)
    asked = [method] if isinstance(method, str) else list(method)
    if not asked:
        raise ValueError("method is empty")
    out: List[str] = []
    for m in asked:
        if not isinstance(m, str):
            raise TypeError(f"method names are strings, not {type(m).__name__}")
        if m == "act-stats":
            out += ["act-sq", "wanda"]
            many = True
        elif m in _lib.METHODS:
            out.append(m)
        else:
            raise ValueError(f"unknown method {m!r} (one of {', '.join(_lib.METHODS)}, act-stats)")
    if len(set(out)) != len(out):
        raise ValueError(f"methods repeated: {out}")
    return out, many


def attribute(model: Union[Model, PathLike], data: Data, method: Union[str, Sequence[str]] = "grad-weight",
              seq_len: int = 512, max_tokens: Optional[int] = None, batch: int = 1, steps: int = 32,
              checkpoint: Optional[PathLike] = None, resume: bool = False, progress: ProgressArg = None,
              threads: Optional[int] = None, per_param: bool = False, act_cache_mb: Optional[int] = None,
              weight_cache_mb: Optional[int] = None, compute: str = "f32") -> Union[Matrix, Dict[str, Matrix]]:
    """The attribution matrix of a model from data (`layermap attribute`, docs/METHODS.md).

    data: a path (text or JSONL file, read as the CLI reads it), a str (a file name when it
    names a file or looks like one -- one line, no spaces, ending .txt/.jsonl/.json/.md --
    else the text itself, chunked like a text file), bytes (text), a list of str (one
    sequence each), a list of {"prompt", "completion"} dicts (loss on the completion), or a
    list of token-id arrays (one sequence each, as given).
    method: a name ("grad-weight", "grad-weight-signed", "fisher", "grad-norm", "act-grad",
    "ig", "ablate", "ablate-mean", "act-sq", "wanda") -> a Matrix; a list of names, or
    "act-stats" (act-sq + wanda) -> {name: Matrix}.
    checkpoint/resume: save the running sums to checkpoint; resume=True continues from it
    (with several methods and no lm_attribute_many in the library, one file per method:
    checkpoint + "." + method).
    Ctrl-C (KeyboardInterrupt) stops after the current pass: the checkpoint is saved, nothing
    leaks, and KeyboardInterrupt is raised.
    compute: the matrix products, as the CLI's --compute: "f32" (default), "bf16" (oneDNN on
    AMX / AVX512_BF16; LayermapError on other CPUs), "auto", "bf16-ref".
    """
    check_progress(progress)
    comp = _compute(compute)
    methods, many = _methods(method)
    seq_len = _opt_int("seq_len", seq_len, 2, none_ok=False)
    max_tok = _opt_int("max_tokens", max_tokens, 0)
    batch = _opt_int("batch", batch, 1, none_ok=False)
    steps = _opt_int("steps", steps, 1, none_ok=False)
    nthreads = _opt_int("threads", threads, 1)
    act_mb = _opt_int("act_cache_mb", act_cache_mb, 1)
    weight_mb = _opt_int("weight_cache_mb", weight_cache_mb, 1)
    if not isinstance(resume, bool):
        raise TypeError("resume must be True or False")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path, not {type(checkpoint).__name__}")
    kind, payload = _check_data(data)
    what = _describe(data)
    # act-sq and wanda together come from one act-sq run (its second matrix is wanda), as the CLI's act-stats
    both = "act-sq" in methods and "wanda" in methods
    run_methods = [m for m in methods if not (both and m == "wanda")]
    codes = []
    for m in run_methods:
        c = ctypes.c_int()
        _lib.lib.lm_method_parse(m.encode(), ctypes.byref(c))
        codes.append(c.value)
    use_many = len(run_methods) > 1 and _lib.has_attribute_many()
    ckpt = os.fsencode(os.fspath(checkpoint)) if checkpoint is not None else None

    with _Using(model) as mdl:
        def work(call: Call) -> Dict[str, Matrix]:
            d = e = None
            results: List[_lib.lm_attr_result] = []
            try:
                d = _dataset(mdl, kind, payload, seq_len, max_tok)
                e = _engine(mdl, d, batch, nthreads, act_cache_mb=act_mb, weight_cache_mb=weight_mb, compute=comp)
                o = _lib.lm_attr_opts()
                _lib.lib.lm_attr_opts_default(ctypes.byref(o))
                o.ig_steps, o.batch = steps, min(batch, d.contents.n_seq)
                o.resume = int(resume)
                o.progress, o.progress_ctx, o.cancel = call.c_progress, None, call.cancel_ptr
                err = _err()
                mats: Dict[str, Any] = {}  # method -> (its result, its lm_matrix)
                if use_many:
                    o.checkpoint_path = ckpt
                    res = (_lib.lm_attr_result * len(codes))()
                    results = [res[i] for i in range(len(codes))]
                    arr = (ctypes.c_int * len(codes))(*codes)
                    rc = _lib.lib.lm_attribute_many(e, d, arr, len(codes), ctypes.byref(o), res, ctypes.byref(err))
                    check(rc, err)
                    mats = {m: (r, r.m) for m, r in zip(run_methods, results)}
                else:  # one call per method
                    for m, c in zip(run_methods, codes):
                        o.checkpoint_path = ckpt + b"." + m.encode() if ckpt and len(run_methods) > 1 else ckpt
                        r = _lib.lm_attr_result()
                        results.append(r)
                        check(_lib.lib.lm_attribute(e, d, c, ctypes.byref(o), ctypes.byref(r), ctypes.byref(err)),
                              err)
                        mats[m] = (r, r.m)
                        if call.canceled():  # finished anyway: stop before the next method
                            from ._errors import CanceledError
                            raise CanceledError("attribute: canceled", 9)
                if both:
                    r = mats["act-sq"][0]
                    mats["wanda"] = (r, r.also)
                return {m: _matrix_of(mdl, mats[m][0], mats[m][1], m, what, seq_len, steps, per_param)
                        for m in methods}
            finally:
                for r in results:
                    _lib.lib.lm_attr_result_free(ctypes.byref(r))
                if e:
                    _lib.lib.lm_engine_free(e)
                if d:
                    _lib.lib.lm_dataset_free(d)

        out = run(work, progress)
    return out if many else out[methods[0]]


def _matrix_of(model: Model, r: _lib.lm_attr_result, mat: Any, method: str, what: str, seq_len: int, steps: int,
               per_param: bool) -> Matrix:
    """The Matrix of one result, with the model name and note the CLI gives it."""
    note = f"data={what} tokens={r.n_tokens} seq_len={seq_len}" + (" ig" if method == "ig" else "")
    if method == "ig":
        note += f" steps={steps} completeness_gap={_g6(r.ig_gap)}"
    meta: Dict[str, Any] = {"model": model.name, "note": note, "tokens": int(r.n_tokens),
                            "predicted": int(r.n_targets),
                            "loss": r.loss_sum / r.n_targets if r.n_targets else float("nan"),
                            "seconds": r.seconds}
    if method == "ig":
        meta["ig_gap"] = r.ig_gap
    m = Matrix._from_c(mat, meta)
    if r.block_influence:
        meta2 = np.ctypeslib.as_array(r.block_influence, shape=(m.layers,)).copy()
        m.meta["block_influence"] = meta2
    if per_param:
        pp = np.array([[model.module_params(l, j) for j in range(len(Matrix.modules))] for l in range(m.layers)],
                      dtype=np.float64)
        m.values = m.values / pp
        m.meta["method"] += " per param"
    return m


def _g6(x: float) -> str:
    """printf's %.6g."""
    return "%.6g" % x


# ---------------------------------------------------------------------------
# ppl
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Perplexity:
    """Result of ppl(): perplexity = exp(nll), nll = mean next-token NLL per predicted token."""
    perplexity: float
    nll: float
    tokens: int
    predicted: int
    sequences: int

    def __float__(self) -> float:
        return self.perplexity


def ppl(model: Union[Model, PathLike], data: Data, seq_len: int = 512, max_tokens: Optional[int] = None,
        threads: Optional[int] = None, llamacpp_arith: bool = False, progress: ProgressArg = None,
        compute: str = "f32") -> Perplexity:
    """Perplexity of a model on data (`layermap ppl`); data and compute as for attribute()."""
    check_progress(progress)
    comp = _compute(compute)
    if llamacpp_arith and comp != 0:
        raise ValueError("ppl: llamacpp_arith rounds as llama.cpp's F32 path does: it needs compute='f32'")
    seq_len = _opt_int("seq_len", seq_len, 2, none_ok=False)
    max_tok = _opt_int("max_tokens", max_tokens, 0)
    nthreads = _opt_int("threads", threads, 1)
    kind, payload = _check_data(data)
    with _Using(model) as mdl:
        def work(call: Call) -> Perplexity:
            d = e = None
            try:
                d = _dataset(mdl, kind, payload, seq_len, max_tok)
                e = _engine(mdl, d, 1, nthreads, ggml_compat=llamacpp_arith, compute=comp)
                ds = d.contents
                nll, count, done = 0.0, 0, 0
                loss, c = ctypes.c_double(), ctypes.c_int64()
                err = _err()
                for s in range(ds.n_seq):
                    if call.canceled():
                        from ._errors import CanceledError
                        raise CanceledError(f"ppl: canceled after {s} of {ds.n_seq} sequences", 9)
                    check(_lib.lib.lm_engine_loss(e, ctypes.byref(ds.seqs[s]), ctypes.byref(loss), ctypes.byref(c),
                                                  ctypes.byref(err)), err)
                    nll += loss.value
                    count += c.value
                    done += ds.seqs[s].n
                    call.report(done, ds.n_tokens, "ppl")
                if count == 0:
                    from ._errors import ArgumentError
                    raise ArgumentError("ppl: no token to predict (text too short?)", 5)
                return Perplexity(math.exp(nll / count), nll / count, int(ds.n_tokens), count, int(ds.n_seq))
            finally:
                if e:
                    _lib.lib.lm_engine_free(e)
                if d:
                    _lib.lib.lm_dataset_free(d)
        return run(work, progress)


# ---------------------------------------------------------------------------
# tokenize, detokenize, generate
# ---------------------------------------------------------------------------

def _text_bytes(text: Union[str, bytes], name: str = "text") -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8", "surrogateescape")
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    raise TypeError(f"{name} must be a str or bytes, not {type(text).__name__}")


def _bos_arg(add_bos: Optional[bool]) -> int:
    if add_bos is None:
        return -1
    if not isinstance(add_bos, bool):
        raise TypeError("add_bos must be None (as the model says), True or False")
    return int(add_bos)


class _Tok:
    """The tokenizer of a Model, or of a tokenizer.json path, for one call."""

    def __init__(self, model: Union[Model, PathLike]) -> None:
        self.own = ctypes.c_void_p()
        self.using: Optional[_Using] = None
        if not isinstance(model, Model) and isinstance(model, (str, os.PathLike)) and \
                os.fspath(model).endswith(".json"):
            err = _err()
            check(_lib.lib.lm_tokenizer_open_json(ctypes.byref(self.own), os.fsencode(os.fspath(model)),
                                                  ctypes.byref(err)), err)
            self.tok = self.own
        else:
            self.using = _Using(model)
            self.tok = self.using.model._tokenizer()

    def __enter__(self) -> ctypes.c_void_p:
        return self.tok

    def __exit__(self, *exc: Any) -> None:
        if self.own:
            _lib.lib.lm_tokenizer_free(self.own)
        if self.using:
            self.using.__exit__()


def _take_ids(p: Any, n: int) -> np.ndarray:
    """Copy and free a malloc'd int32 array."""
    try:
        return np.ctypeslib.as_array(p, shape=(n,)).copy() if n else np.zeros(0, dtype=np.int32)
    finally:
        _lib.libc.free(ctypes.cast(p, ctypes.c_void_p))


def tokenize(model: Union[Model, PathLike], text: Union[str, bytes], add_bos: Optional[bool] = None) -> np.ndarray:
    """Token ids (numpy int32) of text with the model's tokenizer (`layermap tokenize --ids`).
    model may also be a tokenizer.json path. add_bos: None = as the model says."""
    b = _text_bytes(text)
    bos = _bos_arg(add_bos)
    with _Tok(model) as tok:
        ids = ctypes.POINTER(ctypes.c_int32)()
        n = ctypes.c_int()
        err = _err()
        check(_lib.lib.lm_tokenize(tok, b, len(b), bos, ctypes.byref(ids), ctypes.byref(n), ctypes.byref(err)), err)
        return _take_ids(ids, n.value)


def pieces(model: Union[Model, PathLike], ids: Union[Sequence[int], np.ndarray]) -> List[str]:
    """The vocabulary entries of ids as stored ("▁the", "Ġthe", "<0x0A>")."""
    a = np.asarray(ids, dtype=np.int64)
    with _Tok(model) as tok:
        V = _lib.lib.lm_tokenizer_vocab(tok)
        if a.size and (a.min() < 0 or a.max() >= V):
            raise ValueError(f"token ids must be in 0..{V - 1}")
        return [_lib.lib.lm_token_piece(tok, int(i)).decode("utf-8", "replace") for i in a]


def detokenize(model: Union[Model, PathLike], ids: Union[Sequence[int], np.ndarray]) -> str:
    """Text of token ids (byte fallback and byte-level mapping undone)."""
    a = np.ascontiguousarray(np.asarray(ids), dtype=np.int32)
    if a.ndim != 1:
        raise ValueError("ids must be 1-D")
    with _Tok(model) as tok:
        V = _lib.lib.lm_tokenizer_vocab(tok)
        if a.size and (a.min() < 0 or a.max() >= V):
            raise ValueError(f"token ids must be in 0..{V - 1}")
        out = ctypes.c_void_p()
        err = _err()
        check(_lib.lib.lm_detokenize(tok, a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), a.size,
                                     ctypes.byref(out), ctypes.byref(err)), err)
        try:
            return ctypes.string_at(out).decode("utf-8", "replace")
        finally:
            _lib.libc.free(out)


def generate(model: Union[Model, PathLike], prompt: Union[str, bytes] = "", n: int = 32,
             add_bos: Optional[bool] = None, ids: bool = False, threads: Optional[int] = None,
             llamacpp_arith: bool = False, progress: ProgressArg = False,
             compute: str = "f32") -> Union[str, np.ndarray]:
    """Greedy continuation of prompt by up to n tokens (`layermap generate`): the text of
    prompt + continuation, or with ids=True its token ids (numpy int32); compute as for
    attribute()."""
    check_progress(progress)
    comp = _compute(compute)
    if llamacpp_arith and comp != 0:
        raise ValueError("generate: llamacpp_arith rounds as llama.cpp's F32 path does: it needs compute='f32'")
    b = _text_bytes(prompt, "prompt")
    n = _opt_int("n", n, 0, none_ok=False)
    nthreads = _opt_int("threads", threads, 1)
    bos = _bos_arg(add_bos)
    with _Using(model) as mdl:
        tok = mdl._tokenizer()

        def work(call: Call) -> Union[str, np.ndarray]:
            p = ctypes.POINTER(ctypes.c_int32)()
            np_ = ctypes.c_int()
            err = _err()
            check(_lib.lib.lm_tokenize(tok, b, len(b), bos, ctypes.byref(p), ctypes.byref(np_), ctypes.byref(err)),
                  err)
            prompt_ids = _take_ids(p, np_.value)
            if prompt_ids.size == 0:
                raise ValueError("generate: empty prompt and the model adds no BOS: give a prompt")
            eo = _lib.lm_engine_opts(threads=nthreads, max_seq=int(prompt_ids.size + n),
                                     ggml_compat=int(llamacpp_arith), compute=comp)
            e = ctypes.c_void_p()
            check(_lib.lib.lm_engine_new(ctypes.byref(e), mdl._c(), ctypes.byref(eo), ctypes.byref(err)), err)
            try:
                out = ctypes.POINTER(ctypes.c_int32)()
                nout = ctypes.c_int()
                check(_lib.lib.lm_generate_greedy(e, prompt_ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                                                  int(prompt_ids.size), n, ctypes.byref(out), ctypes.byref(nout),
                                                  ctypes.byref(err)), err)
                all_ids = _take_ids(out, nout.value)
            finally:
                _lib.lib.lm_engine_free(e)
            return all_ids if ids else detokenize(mdl, all_ids)
        return run(work, progress)


def kernel() -> str:
    """The matrix kernel in use, e.g. "sgemm: OpenBLAS 0.3.21 ..., core Haswell" (`layermap --version`)."""
    return _lib.lib.lm_engine_kernel_name().decode()


def blas_core() -> Tuple[str, Optional[str]]:
    """(the OpenBLAS core running, the best core this CPU supports or None)."""
    w = _lib.lib.lm_blas_wanted_core()
    return _lib.lib.lm_blas_core().decode(), (w.decode() if w else None)

"""Loading liblayermap and its C declarations (ctypes mirrors of include/layermap.h).

OpenBLAS chooses its kernels, and libgomp its wait policy, when they load.
The ``layermap`` command fixes both by setting OPENBLAS_CORETYPE and
OMP_WAIT_POLICY and re-executing itself (cli/main.c); a library cannot
re-execute its host, so this module puts the same values into ``os.environ``
*before* it loads liblayermap (and with it OpenBLAS and libgomp), unless the
user set them. The core is chosen from the CPU flags in /proc/cpuinfo with the
mapping of ``lm_blas_wanted_core`` (src/compute/backend_cpu.c); the tests check
that both agree.
"""
from __future__ import annotations

import ctypes
import os
import platform
import warnings
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_int32, c_int64,
                    c_size_t, c_uint8, c_uint64, c_void_p)
from pathlib import Path
from typing import Optional

LM_N_MODULES = 7
LM_DIFF_COUNT = 4
LM_METHOD_COUNT = 10

# ---------------------------------------------------------------------------
# Runtime environment (before the library loads)
# ---------------------------------------------------------------------------


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """The feature flags of the first CPU in /proc/cpuinfo (empty when unreadable)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def wanted_core(flags: Optional[frozenset] = None) -> Optional[str]:
    """The OpenBLAS core this CPU supports best, as lm_blas_wanted_core() says.

    SkylakeX with AVX-512 F/BW/VL/DQ, Haswell with AVX2 and FMA, else None
    (no better choice known); only on x86-64.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    f = cpu_flags() if flags is None else flags
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= f:
        return "SkylakeX"
    if {"avx2", "fma"} <= f:
        return "Haswell"
    return None


_CORE_SET_HERE: Optional[str] = None


def _prepare_environment() -> None:
    global _CORE_SET_HERE
    want = wanted_core()
    if want and not os.environ.get("OPENBLAS_CORETYPE"):
        os.environ["OPENBLAS_CORETYPE"] = want
        _CORE_SET_HERE = want
    if not os.environ.get("OMP_WAIT_POLICY"):
        os.environ["OMP_WAIT_POLICY"] = "passive"


def library_path() -> Path:
    """liblayermap.so: $LAYERMAP_LIBRARY when set, else the copy inside the package."""
    env = os.environ.get("LAYERMAP_LIBRARY")
    return Path(env) if env else Path(__file__).with_name("liblayermap.so")


# ---------------------------------------------------------------------------
# Structures (field for field as in include/layermap.h)
# ---------------------------------------------------------------------------

PROGRESS_FN = ctypes.CFUNCTYPE(None, c_void_p, c_double, c_double, c_char_p)


class lm_err(Structure):
    _fields_ = [("code", c_int), ("msg", c_char * 1024)]


class lm_tensor(Structure):
    _fields_ = [("name", c_char * 128), ("dtype", c_int), ("ndim", c_int), ("shape", c_int64 * 4),
                ("data", POINTER(c_uint8)), ("nbytes", c_size_t), ("path", c_char_p),
                ("qk_perm_heads", c_int), ("file_type", c_char * 16)]


class lm_config(Structure):
    _fields_ = [("arch", c_int), ("n_layer", c_int), ("dim", c_int), ("n_head", c_int), ("n_kv_head", c_int),
                ("head_dim", c_int), ("ffn_dim", c_int), ("vocab", c_int), ("max_pos", c_int),
                ("rope_theta", c_float), ("rope_theta_local", c_float), ("rope_type", c_int),
                ("rope_factor", c_float), ("rope_low_freq_factor", c_float), ("rope_high_freq_factor", c_float),
                ("rope_orig_max_pos", c_int), ("norm_eps", c_float), ("tie_embeddings", c_int),
                ("has_qkv_bias", c_int), ("has_qk_norm", c_int), ("has_post_norms", c_int),
                ("norm_add_one", c_int), ("embed_scale", c_float), ("act", c_int), ("attn_scale", c_float),
                ("sliding_window", c_int), ("sliding_pattern", c_int), ("bos_id", c_int), ("eos_id", c_int),
                ("add_bos", c_int)]


class lm_model(Structure):
    _fields_ = [("path", c_char * 4096), ("name", c_char * 256), ("format", c_char * 16), ("cfg", lm_config),
                ("tok_embd", POINTER(lm_tensor)), ("out_norm", POINTER(lm_tensor)), ("output", POINTER(lm_tensor)),
                ("layers", c_void_p), ("tensors", POINTER(lm_tensor)), ("n_tensors", c_int), ("src", c_void_p)]


class lm_matrix(Structure):
    _fields_ = [("n_layer", c_int), ("v", POINTER(c_double)), ("model", c_char * 256), ("method", c_char * 64),
                ("norm", c_char * 16), ("note", c_char * 512), ("layer_extra", POINTER(c_double)),
                ("layer_extra_name", c_char * 64), ("layer_index", POINTER(c_int)), ("meta", c_void_p),
                ("se", POINTER(c_double)), ("split_half", c_double), ("n_samples", c_int)]


class lm_plot_opts(Structure):
    _fields_ = [("title", c_char_p), ("label_step", c_int), ("has_center", c_int), ("center", c_double),
                ("has_range", c_int), ("vmin", c_double), ("vmax", c_double), ("cols", c_int), ("scales", c_int)]


class lm_diff_opts(Structure):
    _fields_ = [("tol", c_double), ("rank_k", c_int), ("oversample", c_int), ("power_iters", c_int),
                ("seed", c_uint64), ("threads", c_int), ("progress", PROGRESS_FN), ("progress_ctx", c_void_p),
                ("layers", POINTER(c_uint8)), ("n_layers_mask", c_int), ("backend", c_void_p),
                ("dist", c_void_p)]  # lm_attr_dist *: MPI ranks (the CLI's); NULL here


class lm_seq(Structure):
    _fields_ = [("tok", POINTER(c_int32)), ("mask", POINTER(c_uint8)), ("n", c_int)]


class lm_dataset(Structure):
    _fields_ = [("seqs", POINTER(lm_seq)), ("n_seq", c_int), ("n_tokens", c_int64), ("n_targets", c_int64)]


class lm_data_opts(Structure):
    _fields_ = [("seq_len", c_int), ("max_tokens", c_int64), ("llamacpp_chunks", c_int)]


class lm_engine_opts(Structure):
    _fields_ = [("threads", c_int), ("max_seq", c_int), ("max_batch", c_int), ("weight_cache_bytes", c_size_t),
                ("ggml_compat", c_int), ("act_cache_bytes", c_size_t), ("backend", c_void_p), ("compute", c_int)]


class lm_attr_opts(Structure):
    _fields_ = [("ig_steps", c_int), ("batch", c_int), ("checkpoint_path", c_char_p), ("resume", c_int),
                ("checkpoint_secs", c_double), ("max_seqs", c_int), ("progress", PROGRESS_FN),
                ("progress_ctx", c_void_p), ("layers", POINTER(c_uint8)), ("n_layers", c_int),
                ("cancel", POINTER(c_int)), ("until_stable", c_double),
                ("dist", c_void_p)]  # lm_attr_dist *: MPI ranks (the CLI's); NULL here


class lm_attr_result(Structure):
    _fields_ = [("m", POINTER(lm_matrix)), ("also", POINTER(lm_matrix)), ("loss_sum", c_double),
                ("n_targets", c_int64), ("n_tokens", c_int64), ("n_seq_done", c_int), ("complete", c_int),
                ("ig_gap", c_double), ("block_influence", POINTER(c_double)), ("seconds", c_double),
                ("n_samples", c_int), ("split_half", c_double), ("stopped_stable", c_int),
                ("in_sum2", POINTER(c_double)), ("in_sum2_off", POINTER(c_size_t))]


# every structure, for the layout test against the C compiler's offsetof
STRUCTS = [lm_err, lm_tensor, lm_config, lm_model, lm_matrix, lm_plot_opts, lm_diff_opts, lm_seq, lm_dataset,
           lm_data_opts, lm_engine_opts, lm_attr_opts, lm_attr_result]

# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------

_P = POINTER
_PROTOS = {
    "lm_strerror": (c_char_p, [c_int]),
    "lm_dtype_name": (c_char_p, [c_int]),
    "lm_arch_name": (c_char_p, [c_int]),
    "lm_model_open": (c_int, [_P(_P(lm_model)), c_char_p, _P(lm_err)]),
    "lm_model_close": (None, [_P(lm_model)]),
    "lm_model_module_params": (c_int64, [_P(lm_model), c_int, c_int]),
    "lm_matrix_new": (_P(lm_matrix), [c_int]),
    "lm_matrix_free": (None, [_P(lm_matrix)]),
    "lm_matrix_normalize": (c_int, [_P(lm_matrix), c_int, _P(lm_err)]),
    "lm_norm_parse": (c_int, [c_char_p, _P(c_int)]),
    "lm_matrix_write_csv": (c_int, [_P(lm_matrix), c_char_p, _P(lm_err)]),
    "lm_matrix_write_json": (c_int, [_P(lm_matrix), c_char_p, _P(lm_err)]),
    "lm_matrix_read_csv": (c_int, [_P(_P(lm_matrix)), c_char_p, _P(lm_err)]),
    "lm_matrix_read_json": (c_int, [_P(_P(lm_matrix)), c_char_p, _P(lm_err)]),
    "lm_plot_opts_default": (None, [_P(lm_plot_opts)]),
    "lm_plot_write": (c_int, [_P(_P(lm_matrix)), c_int, _P(lm_plot_opts), c_char_p, _P(lm_err)]),
    "lm_diff_opts_default": (None, [_P(lm_diff_opts)]),
    "lm_diff": (c_int, [_P(lm_model), _P(lm_model), _P(lm_diff_opts), _P(lm_matrix) * LM_DIFF_COUNT, _P(lm_err)]),
    "lm_tokenizer_open": (c_int, [_P(c_void_p), _P(lm_model), _P(lm_err)]),
    "lm_tokenizer_open_json": (c_int, [_P(c_void_p), c_char_p, _P(lm_err)]),
    "lm_tokenizer_free": (None, [c_void_p]),
    "lm_tokenizer_vocab": (c_int, [c_void_p]),
    "lm_tokenize": (c_int, [c_void_p, c_char_p, c_size_t, c_int, _P(_P(c_int32)), _P(c_int), _P(lm_err)]),
    "lm_token_piece": (c_char_p, [c_void_p, c_int32]),
    "lm_detokenize": (c_int, [c_void_p, _P(c_int32), c_int, _P(c_void_p), _P(lm_err)]),
    "lm_dataset_load": (c_int, [_P(_P(lm_dataset)), c_char_p, c_void_p, _P(lm_data_opts), _P(lm_err)]),
    "lm_dataset_from_text": (c_int, [_P(_P(lm_dataset)), c_char_p, c_size_t, c_void_p, _P(lm_data_opts),
                                     _P(lm_err)]),
    "lm_dataset_from_texts": (c_int, [_P(_P(lm_dataset)), _P(c_char_p), _P(c_size_t), _P(c_char_p), _P(c_size_t),
                                      c_int, c_void_p, _P(lm_data_opts), _P(lm_err)]),
    "lm_dataset_from_ids": (c_int, [_P(_P(lm_dataset)), _P(_P(c_int32)), _P(c_int), c_int, c_int,
                                    _P(lm_data_opts), _P(lm_err)]),
    "lm_dataset_free": (None, [_P(lm_dataset)]),
    "lm_engine_new": (c_int, [_P(c_void_p), _P(lm_model), _P(lm_engine_opts), _P(lm_err)]),
    "lm_engine_free": (None, [c_void_p]),
    "lm_compute_parse": (c_int, [c_char_p]),
    "lm_engine_compute": (c_int, [c_void_p]),
    "lm_engine_loss": (c_int, [c_void_p, _P(lm_seq), _P(c_double), _P(c_int64), _P(lm_err)]),
    "lm_engine_kernel_name": (c_char_p, []),
    "lm_blas_core": (c_char_p, []),
    "lm_blas_wanted_core": (c_char_p, []),
    "lm_blas_variant": (c_char_p, []),
    "lm_blas_library": (c_char_p, []),
    "lm_blas_warning": (c_char_p, []),
    "lm_generate_greedy": (c_int, [c_void_p, _P(c_int32), c_int, c_int, _P(_P(c_int32)), _P(c_int), _P(lm_err)]),
    "lm_method_parse": (c_int, [c_char_p, _P(c_int)]),
    "lm_attr_opts_default": (None, [_P(lm_attr_opts)]),
    "lm_attribute": (c_int, [c_void_p, _P(lm_dataset), c_int, _P(lm_attr_opts), _P(lm_attr_result), _P(lm_err)]),
    "lm_attr_result_free": (None, [_P(lm_attr_result)]),
}
# Declared in the header but possibly not in this build of the library: used when present.
_OPTIONAL = {
    "lm_attribute_many": (c_int, [c_void_p, _P(lm_dataset), _P(c_int), c_int, _P(lm_attr_opts),
                                  _P(lm_attr_result), _P(lm_err)]),
}


def _load() -> ctypes.CDLL:
    _prepare_environment()
    path = library_path()
    if not path.exists():
        raise ImportError(f"layermap: {path}: the shared library is missing (reinstall with `pip install .`, "
                          "or set LAYERMAP_LIBRARY to a liblayermap.so built by `make shared`)")
    lib = ctypes.CDLL(str(path))
    for name, (res, args) in _PROTOS.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    for name, (res, args) in _OPTIONAL.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            continue
        f.restype, f.argtypes = res, args
    if _CORE_SET_HERE and lib.lm_blas_core().decode().lower() != _CORE_SET_HERE.lower():
        warnings.warn(f"layermap: OpenBLAS runs core {lib.lm_blas_core().decode()}, not {_CORE_SET_HERE}: "
                      "it was loaded before layermap (import layermap first, or set OPENBLAS_CORETYPE); "
                      "matrix products may be several times slower", RuntimeWarning, stacklevel=3)
    # which OpenBLAS build the loader gave this process (the CLI prints the same line at start-up)
    blas_warning = lib.lm_blas_warning()
    if blas_warning and not os.environ.get("LAYERMAP_NO_BLAS_WARNING"):
        warnings.warn(f"layermap: {blas_warning.decode(errors='replace')}", RuntimeWarning, stacklevel=3)
    return lib


lib = _load()
libc = ctypes.CDLL(None)
libc.free.argtypes = [c_void_p]
libc.free.restype = None
libc.malloc.argtypes = [c_size_t]
libc.malloc.restype = c_void_p

MODULES = tuple((s or b"").decode() for s in (c_char_p * LM_N_MODULES).in_dll(lib, "lm_module_names"))
DIFF_METRICS = tuple((s or b"").decode() for s in (c_char_p * LM_DIFF_COUNT).in_dll(lib, "lm_diff_metric_names"))


METHODS = tuple((s or b"").decode() for s in (c_char_p * LM_METHOD_COUNT).in_dll(lib, "lm_method_names"))


def has_attribute_many() -> bool:
    """True when this liblayermap implements lm_attribute_many."""
    return hasattr(lib, "lm_attribute_many")

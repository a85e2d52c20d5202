"""The package as installed: the library inside it (RUNPATH to OpenBLAS's
OpenMP build), structure layouts equal to the C compiler's, the OpenBLAS core
chosen in Python equal to lm_blas_wanted_core(), the version."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import layermap
from layermap import _lib

from conftest import ROOT


def test_library_ships_in_package():
    pkg = Path(layermap.__file__).parent
    assert (pkg / "liblayermap.so").is_file()
    assert (pkg / "py.typed").is_file()
    assert _lib.library_path() == pkg / "liblayermap.so" or "LAYERMAP_LIBRARY" in os.environ
    assert not str(pkg).startswith(str(ROOT / "python")), "tests must run against the installed package"


def test_runpath_openblas_openmp():
    readelf = shutil.which("readelf")
    assert readelf, "readelf (binutils) is needed"
    out = subprocess.run([readelf, "-d", str(_lib.library_path())], capture_output=True, text=True).stdout
    ompblas = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
    if os.path.exists(ompblas + "/pkgconfig/openblas.pc"):
        assert re.search(r"\(RUNPATH\).*" + re.escape(ompblas), out), out
        assert "USE_OPENMP" in layermap.kernel()
    assert "libopenblas.so" in out and "libgomp.so" in out


def test_struct_layouts_match_the_header(tmp_path):
    """Compile a program printing sizeof/offsetof of every structure and compare with ctypes."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    assert cc, "a C compiler is needed"
    lines = ['#include "layermap.h"', "#include <stddef.h>", "#include <stdio.h>", "int main(void) {"]
    for s in _lib.STRUCTS:
        n = s.__name__
        lines.append(f'printf("{n} %zu\\n", sizeof({n}));')
        for f, _ in s._fields_:
            lines.append(f'printf("{n}.{f} %zu\\n", offsetof({n}, {f}));')
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", str(ROOT / "include"), str(src), "-o", str(exe)], check=True)
    want = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                         check=True).stdout.splitlines())
    got = {}
    for s in _lib.STRUCTS:
        got[s.__name__] = str(ctypes.sizeof(s))
        for f, _ in s._fields_:
            got[f"{s.__name__}.{f}"] = str(getattr(s, f).offset)
    assert got == want


def test_core_choice_matches_c():
    """The /proc/cpuinfo mapping gives what lm_blas_wanted_core() says, and OpenBLAS runs it."""
    w = _lib.lib.lm_blas_wanted_core()
    assert _lib.wanted_core() == (w.decode() if w else None)
    running, wanted = layermap.blas_core()
    if wanted and os.environ.get("OPENBLAS_CORETYPE", "").lower() == wanted.lower():
        assert running.lower() == wanted.lower()


def test_mapping_of_flags():
    f = frozenset
    assert _lib.wanted_core(f({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"})) in ("SkylakeX", None)
    if _lib.wanted_core(f({"avx2", "fma"})) is not None:  # x86-64
        assert _lib.wanted_core(f({"avx2", "fma"})) == "Haswell"
        assert _lib.wanted_core(f({"avx512f", "avx512bw", "avx512vl", "avx2", "fma"})) == "Haswell"
        assert _lib.wanted_core(f({"avx2"})) is None
        assert _lib.wanted_core(f()) is None


def test_environment_set_before_load():
    """In a fresh interpreter with neither variable set, importing sets both as the CLI does."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OMP_WAIT_POLICY")}
    code = ("import os, layermap; from layermap import _lib; w = _lib.lib.lm_blas_wanted_core();"
            "print(os.environ.get('OPENBLAS_CORETYPE'), os.environ['OMP_WAIT_POLICY'], w.decode() if w else None,"
            " layermap.blas_core()[0])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent).stdout.split()
    core, policy, wanted, running = out
    assert policy == "passive"
    if wanted != "None":
        assert core == wanted and running.lower() == wanted.lower()
    # a user's choice is kept
    env.update(OPENBLAS_CORETYPE="Prescott", OMP_WAIT_POLICY="active")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent).stdout.split()
    assert out[0] == "Prescott" and out[1] == "active"


def test_blas_warning_on_import():
    """Importing under the OpenMP OpenBLAS says nothing; under the pthread build (LD_LIBRARY_PATH,
    as tests/cli/test_blas.sh does for the CLI) it warns once, naming the build."""
    omp, pth = Path("/usr/lib/x86_64-linux-gnu/openblas-openmp"), Path("/usr/lib/x86_64-linux-gnu/openblas-pthread")
    if not (omp / "libopenblas.so.0").exists():
        pytest.skip(f"{omp}: the OpenMP OpenBLAS (libopenblas0-openmp) is not installed")
    code = ("import warnings; warnings.simplefilter('always'); from layermap import _lib;"
            "print(_lib.lib.lm_blas_variant().decode())")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LAYERMAP_NO_BLAS_WARNING")}
    env["OMP_NUM_THREADS"] = "2"  # with one thread no build is wrong
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                       cwd=Path(__file__).parent)
    assert r.stdout.split() == ["OpenMP"] and "OpenBLAS" not in r.stderr, r.stderr
    if not (pth / "libopenblas.so.0").exists():
        pytest.skip(f"{pth}: the pthread OpenBLAS is not installed (tests/cli/test_blas.sh installs it)")
    env["LD_LIBRARY_PATH"] = str(pth)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                       cwd=Path(__file__).parent)
    assert r.stdout.split() == ["pthreads"]
    lines = [ln for ln in r.stderr.splitlines() if "RuntimeWarning" in ln]
    assert len(lines) == 1 and "RuntimeWarning: layermap: loaded " + str(pth) in lines[0], r.stderr
    assert "(OpenBLAS pthreads build, core " in lines[0] and "unset LD_LIBRARY_PATH" in lines[0]


def test_version_matches_header():
    m = re.search(r'#define LM_VERSION "([^"]+)"', (ROOT / "include" / "layermap.h").read_text())
    assert m and layermap.__version__ == m.group(1)


def test_public_names():
    assert layermap.MODULES == ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate")
    assert layermap.DIFF_METRICS == ("rel", "density", "cosine", "rank")
    assert "grad-weight" in layermap.METHODS and len(layermap.METHODS) == 10
    for name in layermap.__all__:
        assert getattr(layermap, name) is not None

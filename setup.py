"""setuptools glue for pyproject.toml: build liblayermap.so with the Makefile
(`make shared`, -fPIC objects in build/pic) and ship it inside the package.

The wheel is tagged py3-none-<platform>: it holds a native library but no
CPython extension (the binding is ctypes), so one wheel serves every Python 3.
"""
import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

ROOT = os.path.dirname(os.path.abspath(__file__))
SOLIB = os.path.join(ROOT, "build", "pic", "liblayermap.so")


def make_shared():
    """Run `make shared` in the repository (incremental: only changed sources rebuild)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    jobs = str(max(1, min(os.cpu_count() or 1, 16)))
    cmd = ["make", "-C", ROOT, "-j" + jobs, "BUILD=build", "shared"]
    print("layermap: " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=env)
    if r.returncode != 0 or not os.path.exists(SOLIB):
        sys.exit("layermap: `make shared` failed: the Debian build dependencies are needed "
                 "(scripts/deps.sh installs them: OpenBLAS, cJSON, PCRE2, utf8proc, cairo, a C compiler)")


class BuildPy(build_py):
    def run(self):
        make_shared()
        super().run()
        dst = os.path.join(self.build_lib, "layermap")
        os.makedirs(dst, exist_ok=True)
        shutil.copy2(SOLIB, os.path.join(dst, "liblayermap.so"))


class BinaryDistribution(Distribution):
    """Holds a native library: installed to platlib, wheel tagged with the platform."""

    def has_ext_modules(self):
        return True


class BdistWheel(bdist_wheel):
    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


os.makedirs(os.path.join(ROOT, "build", "python"), exist_ok=True)
setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel},
      options={"build": {"build_base": "build/python"}, "egg_info": {"egg_base": "build/python"}})

"""The public API's type hints are consistent (mypy over the installed package)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import layermap

from conftest import ROOT


def test_mypy_clean():
    assert Path(layermap.__file__).parent.joinpath("py.typed").is_file()
    r = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--cache-dir",
                        str(ROOT / "build" / "mypy-cache"), "-p", "layermap"], capture_output=True, text=True)
    assert "No module named mypy" not in r.stderr, "mypy is needed (tests/python/run.sh installs it)"
    assert r.returncode == 0, r.stdout + r.stderr

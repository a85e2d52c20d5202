"""Shared fixtures of the Python tests: the repository, the CLI to compare
with, the shared test models. A missing reference (CLI, model) fails the test:
nothing is skipped silently except what needs pandas."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _models() -> Path:
    return Path(os.environ.get("LM_MODELS") or ROOT.parent / "shared" / "models").resolve()


MODELS = _models()
CALIB = ROOT / "data" / "calib.txt"


@pytest.fixture(scope="session")
def cli() -> Path:
    p = Path(os.environ.get("LM_BIN") or ROOT / "build" / "layermap")
    assert p.is_file() and os.access(p, os.X_OK), f"{p}: the layermap CLI is needed (make)"
    return p


def model(name: str) -> str:
    p = MODELS / name
    assert p.exists(), f"{p}: shared test model missing (make MODELS=...)"
    return str(p)


def run_cli(cli: Path, args: List[str], ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(cli)] + [str(a) for a in args], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, f"layermap {' '.join(map(str, args))}: exit {r.returncode}: {r.stderr}"
    return r


def json_without_run_meta(p: Path) -> bytes:
    """A matrix JSON file's bytes less its "meta" object: the CLI records its
    own run there (command line, seconds, threads), which a Python call that
    computes the same matrix cannot reproduce; every other byte must match."""
    import re
    return re.sub(rb',\n  "meta": .*(?=\n}\n$)', b"", p.read_bytes(), flags=re.S)

"""Loading a bench script (bench/<name>.py) as a module, so unit tests can check its
arithmetic. The scripts import their siblings (benchutil, soak) by plain name, as they do
when run as `python bench/<name>.py`, so bench/ is on sys.path while one loads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs, as importlib's recipe does: dataclasses look their
        # module up by name (report.Row).
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        if str(BENCH) in sys.path:  # a script may have taken it off itself (ofrep_http.py)
            sys.path.remove(str(BENCH))

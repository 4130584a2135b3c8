"""The PostgreSQL fixtures of tests/orchestrator/conftest.py, shared here without moving them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "orchestrator" / "conftest.py"
_SPEC = importlib.util.spec_from_file_location("_clonesweep_orchestrator_fixtures_safety", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_MODULE)

postgres_server = _MODULE.postgres_server
postgres_url = _MODULE.postgres_url

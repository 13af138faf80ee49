"""`.env.example` documents every variable the settings read, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import shared.settings

ROOT = Path(__file__).resolve().parents[1]


def _variables_read_by_settings() -> set[str]:
    source = Path(shared.settings.__file__).read_text()
    return set(re.findall(r'"((?:REDIS|TWILIO|FLEX|CONVERSATIONS|TASKROUTER|HANDOVER|WORKER|LOG)_[A-Z_]+)"', source))


def test_every_setting_is_documented_in_env_example():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    read = _variables_read_by_settings()
    assert read, "no variables found in shared/settings.py"
    assert read - documented == set()
    assert documented - read == set()

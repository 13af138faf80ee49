"""README.md stays true: its two set-up commands, CI's command, every setting."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _shell_blocks() -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", README, re.S)]


def test_the_first_two_commands_install_and_run_dev_then_the_tests():
    dev, tests = _shell_blocks()[:2]
    assert dev.startswith("pip install") and dev.endswith("flex-handover dev")
    assert tests.startswith("pip install") and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _shell_blocks()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_every_setting_in_env_example_is_in_the_readme_table():
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    in_readme = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", README, re.M))
    in_readme |= set(re.findall(r"`(TWILIO_API_(?:KEY|SECRET))`", README))
    assert documented - in_readme == set()


def test_compose_is_the_production_path():
    assert "docker compose up" in README

"""`.env.example` and the README's settings table agree with the one declaration of
the settings (`shared.settings.variables()`): every variable, the same defaults,
nothing undeclared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from commands.settings_table import markdown_table
from shared.settings import Settings, variables

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
README = (ROOT / "README.md").read_text()
_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]+)=(.*)$", re.MULTILINE)


def env_example_problems(text: str) -> list[str]:
    """What in an `.env.example` text disagrees with the declaration.

    A variable with a default shows exactly that default (commented out or not);
    one without a default shows a placeholder to fill in, or nothing.
    """
    declared = {variable.env: variable for variable in variables()}
    problems = []
    seen: list[str] = []
    for _, name, value in _ASSIGNMENT.findall(text):
        seen.append(name)
        variable = declared.get(name)
        if variable is None:
            problems.append(f"{name}: not a setting")
        elif variable.default_text is not None and value != variable.default_text:
            problems.append(f"{name}: shows {value!r}, the default is {variable.default_text!r}")
    problems += [
        f"{name}: appears {seen.count(name)} times" for name in set(seen) if seen.count(name) > 1
    ]
    problems += [f"{name}: missing" for name in declared if name not in seen]
    return problems


def readme_settings_table() -> str:
    section = README.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def test_env_example_documents_every_setting_with_its_default():
    assert env_example_problems(ENV_EXAMPLE) == []


@pytest.mark.parametrize(
    "edit, problem",
    [
        (
            lambda text: text.replace("# WORKER_CONCURRENCY=50", "# WORKER_CONCURRENCY=40"),
            "WORKER_CONCURRENCY: shows '40', the default is '50'",
        ),
        (lambda text: text.replace("# LOG_LEVEL=INFO\n", ""), "LOG_LEVEL: missing"),
        (lambda text: text + "# HANDOVER_RETRIES=3\n", "HANDOVER_RETRIES: not a setting"),
        (lambda text: text + "FLEX_TASK_CHANNEL=chat\n", "FLEX_TASK_CHANNEL: appears 2 times"),
    ],
)
def test_the_env_example_check_catches_drift(edit, problem):
    assert env_example_problems(edit(ENV_EXAMPLE)) == [problem]


def test_readme_settings_table_is_the_declaration():
    # Regenerate with: python -m commands.settings_table
    assert readme_settings_table() == markdown_table()


def test_each_variable_is_declared_once():
    names = [variable.env for variable in variables()]
    assert len(names) == len(set(names))


def test_documented_defaults_read_back_as_the_defaults():
    """What `.env.example` and the README show is what an unset variable means."""
    env = {v.env: v.default_text for v in variables() if v.default_text is not None}
    env["REDIS_URL"] = "redis://localhost:6379/0"
    assert Settings.from_env(env, role="operator") == Settings(redis_url=env["REDIS_URL"])

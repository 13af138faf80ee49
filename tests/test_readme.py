"""README.md stays true: its two set-up commands, CI's command, every setting, every module."""

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


def test_compose_is_the_production_path():
    assert "docker compose up" in README


PACKAGES = ("commands", "api", "worker", "shared", "standins")


def _layout_section() -> str:
    return README.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]


def test_the_layout_table_names_every_module_and_nothing_that_is_gone():
    layout = _layout_section()
    named = set(re.findall(r"`((?:%s)/[\w/]*(?:\.py|/))`" % "|".join(PACKAGES), layout))
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    }
    # A sub-package is named once, as `its/folder/`, with its modules listed by file name.
    folders = {name for name in named if name.endswith("/")}
    listed = {
        module
        for module in modules
        if any(
            module.startswith(folder) and f"`{Path(module).name}`" in layout for folder in folders
        )
    }
    assert modules - named - listed == set(), "modules missing from README's Layout table"
    gone = {name for name in named if not (ROOT / name).exists()}
    assert gone == set(), "README's Layout table names files that do not exist"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped,
    spaces to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_to_a_section_names_a_heading_that_exists():
    readme = (ROOT / "README.md").read_text()
    body = re.sub(r"```.*?```", "", readme, flags=re.S)  # no headings in code blocks
    anchors = {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", body, flags=re.M)}
    linked = set(re.findall(r"\]\(#([^)]+)\)", readme))
    assert linked - anchors == set()

"""The README's settings table, printed from the one declaration in `shared.settings`.

`python -m commands.settings_table` prints it, to paste under README's "Settings";
tests/test_env_example.py fails while the README holds any other table.
"""

from __future__ import annotations

from shared.settings import Variable, variables

HEADER = "| variable | default | meaning |\n| --- | --- | --- |\n"


def row(variable: Variable) -> str:
    default = variable.default_text
    cells = (
        f"`{variable.env}`",
        f"`{default}`" if default is not None else variable.unset,
        variable.help,
    )
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def markdown_table() -> str:
    return HEADER + "".join(row(variable) + "\n" for variable in variables())


if __name__ == "__main__":
    print(markdown_table(), end="")

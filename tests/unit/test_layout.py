"""The newcomer's map: every module says what it is for, the README's Layout table names every
module, and no module grows past what one sitting can read."""

from __future__ import annotations

import ast
import re

from tests.support.paths import REPO

MODULES = sorted(
    path.relative_to(REPO).as_posix()
    for path in (REPO / "bot").rglob("*.py")
    if "__pycache__" not in path.parts
)
# The sandbox's servers imitate whole services (Slack's Web API, Stripe's API, Slack's client
# for the demo page); their size is the services'.
SERVER_CLASSES = {"bot/sandbox/slack.py", "bot/sandbox/stripe.py", "bot/demo/workspace.py"}
MAX_LINES = 600


def layout_table() -> dict[str, str]:
    """The README's Layout table: each row's backticked paths → the row's whole text."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ", 1)[0]
        for path in re.findall(r"`([^`]+)`", first_cell):
            rows[path] = line
    return rows


def test_every_module_has_a_docstring_whose_first_line_says_what_it_is_for():
    missing = []
    for module in MODULES:
        docstring = ast.get_docstring(ast.parse((REPO / module).read_text()))
        first = (docstring or "").strip().splitlines()[0] if docstring else ""
        if len(first.split()) < 3:
            missing.append(module)
    assert missing == [], f"modules without a docstring that says what they are for: {missing}"


def test_the_readme_layout_table_names_every_module():
    rows = layout_table()
    unnamed = []
    for module in MODULES:
        package = module.removesuffix("__init__.py")  # a package is named by its folder
        if module in rows or package in rows or module == "bot/__init__.py":
            continue
        folder, name = module.rsplit("/", 1)
        row = rows.get(folder + "/")
        if row is None or f"`{name}`" not in row:
            unnamed.append(module)
    assert unnamed == [], f"modules the README's Layout table does not name: {unnamed}"


def test_the_readme_layout_table_names_nothing_that_is_gone():
    gone = [path for path in layout_table() if not (REPO / path).exists()]
    assert gone == [], f"the Layout table names paths that do not exist: {gone}"


def test_no_module_is_longer_than_one_sitting():
    long = {
        module: lines
        for module in MODULES
        if module not in SERVER_CLASSES
        and (lines := len((REPO / module).read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"

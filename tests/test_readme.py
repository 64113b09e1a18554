"""The README's generated tables equal what the registries hold now."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from pipeline import docs

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(docs.TABLES))
def test_readme_table_is_current(name):
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", README, re.S)
    assert m, f"README.md lacks the {name} table markers"
    assert m.group(1) == docs.TABLES[name](), f"regenerate with: python -m pipeline.docs ({name} table)"


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one():
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = next(line for line in ci.splitlines() if "pytest" in line)
    assert test_cmd in README

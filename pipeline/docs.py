"""Tables for the README, generated from the registries (a test keeps the README equal to them).

``python -m pipeline.docs`` prints them; ``tests/test_readme.py`` checks the README's
copies between the ``<!-- layers:begin -->`` / ``<!-- layers:end -->`` (and
``commands``) markers.
"""

from __future__ import annotations

import sys


def layer_table() -> str:
    """Markdown: one row per layer family with its registered types (forks marked)."""
    from . import layers  # noqa: F401  (fills the registry)
    from .registry import LAYERS

    families: dict[str, list[str]] = {}
    for name, cls in LAYERS.items():
        fork = getattr(cls, "fork", "")
        families.setdefault(cls.__module__.rsplit(".", 1)[-1], []).append(
            f"{name} (fork: {fork})" if fork else name
        )
    rows = ["| file `pipeline/layers/…` | layer types |", "|---|---|"]
    for family in sorted(families):
        rows.append(f"| `{family}.py` | {', '.join(families[family])} |")
    rows.append(f"\n{len(LAYERS)} layer types.")
    return "\n".join(rows)


def command_table() -> str:
    """Markdown: every command and tool with the first line of its module's docstring."""
    import importlib

    from .commands import cli

    rows = ["| command | what it does |", "|---|---|"]
    for prefix, table in (("pipeline ", cli.COMMANDS), ("", cli.TOOLS)):
        for name in sorted(table):
            func = table[name]
            doc = (func.__doc__ or "").strip()
            if doc.startswith("pipeline.commands."):  # a lazy entry: read its module's docstring
                module = doc.rsplit(".", 1)[0]
                doc = (importlib.import_module(module).__doc__ or "").strip()
            elif hasattr(func, "func"):  # functools.partial over upgrade.run
                what = sys.modules[func.func.__module__]._TOOLS[name][0]
                doc = f"rewrite an old {what} in today's format"
            first = doc.splitlines()[0].rstrip(".") if doc else ""
            first = first.replace("``", "`").replace("|", "/")
            rows.append(f"| `{prefix}{name}` | {first} |")
    return "\n".join(rows)


TABLES = {"layers": layer_table, "commands": command_table}


def main() -> int:
    for name, make in TABLES.items():
        print(f"<!-- {name}:begin -->\n{make()}\n<!-- {name}:end -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

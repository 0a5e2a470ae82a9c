"""The package's shape: no import circles among its modules, lazy imports inside functions included.

A circle makes the order of imports matter and hides which module owns what (STYLE.md).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lenet5"


def imports_of(path: Path) -> set[str]:
    """The lenet5 modules `path` imports anywhere in it, as dotted names below the package."""
    here = path.relative_to(PACKAGE).with_suffix("").parts[:-1]  # the module's own package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - (node.level - 1)] if node.level > 1 else here)
            elif node.module and node.module.split(".")[0] == "lenet5":
                base = []
            else:
                continue
            target = base + (node.module.split(".") if node.module else [])
            if target and target[0] == "lenet5" and not node.level:
                target = target[1:]
            for alias in node.names:  # `from . import x` names a module, `from .x import y` does not
                module = ".".join(target + [alias.name])
                found.add(module if module_path(module) else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lenet5."):
                    found.add(alias.name[len("lenet5."):])
    return {m for m in found if m and module_path(m)}


def module_path(name: str) -> Path | None:
    base = PACKAGE.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_no_import_circles():
    modules = {".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
               for p in PACKAGE.rglob("*.py")}
    graph = {m: imports_of(module_path(m)) - {m} for m in modules if module_path(m)}
    circles = []

    def visit(node, trail):
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, trail + [nxt])
        done.add(node)

    done: set[str] = set()
    for m in sorted(graph):
        if m not in done:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(sorted(set(circles)))


def test_no_function_is_longer_than_a_screen():
    """STYLE.md: a function fits on a screen (80 lines); one that does five jobs becomes five."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long

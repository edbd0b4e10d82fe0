"""The package layout: imports flow one way through the stages, and no modules import each other in a loop.

Every import in ``cds/`` is read from the source (function-level imports included), so a cycle dodged by
importing inside a function still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cds"

#: The stages, lowest first. A module may import its own stage and the stages below it, never above.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("cds.errors", "cds.settings", "cds.settings_model", "cds.db", "cds.version", "cds.deadline")),
    ("auth", ("cds.auth",)),
    ("rules", ("cds.rules",)),
    ("hooks", ("cds.hooks",)),
    ("fhir", ("cds.fhir",)),
    ("decide", ("cds.decide",)),
    ("ledger", ("cds.ledger", "cds.migrations")),
    ("call", ("cds.call",)),
    ("review", ("cds.review",)),
    ("clinician", ("cds.clinician",)),
    ("toolkit", ("cds.toolkit",)),
    ("population", ("cds.population",)),
    ("web", ("cds.web",)),
    ("entry", ("cds", "cds.cli", "cds.__main__")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "versions" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The cds modules that ``name`` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for block in ast.walk(tree)
                 if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:  # `if TYPE_CHECKING:` imports are for annotations, never run
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cds"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cds":
                continue
            for alias in node.names:  # `from cds.rules import pack` imports the module cds.rules.pack
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def stage_of(module: str) -> int:
    best, rank = -1, -1
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def against_the_flow(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} ({STAGES[stage_of(a)][0]}) imports {b} ({STAGES[stage_of(b)][0]})"
        for a, targets in graph.items() for b in targets
        if stage_of(b) > stage_of(a)
    )


def test_every_module_belongs_to_a_stage():
    assert [m for m in _graph() if stage_of(m) < 0] == []


def test_no_import_cycles():
    assert cycles(_graph()) == []


def test_imports_flow_one_way_through_the_stages():
    assert against_the_flow(_graph()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"cds.rules.pack": {"cds.rules.check"}, "cds.rules.check": {"cds.rules.pack"}},
         [["cds.rules.check", "cds.rules.pack"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_check_finds_a_cycle(graph, expected):
    assert cycles(graph) == expected


def test_the_flow_check_finds_an_upward_import():
    graph = {"cds.rules.pack": {"cds.decide.cards"}, "cds.decide.cards": {"cds.rules.pack"}}
    assert against_the_flow(graph) == ["cds.rules.pack (rules) imports cds.decide.cards (decide)"]


def test_durable_rules_and_fhir_resources_each_have_one_importer():
    importers: dict[str, set[str]] = {"durable": set(), "fhir": set()}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                    else [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value.startswith(("fhir.resources", "durable.")) else [])
            for mod in mods:
                top = mod.split(".")[0]
                if top in importers:
                    importers[top].add(name)
    assert importers == {"durable": {"cds.rules.engine"}, "fhir": {"cds.fhir.parse"}}


def test_every_data_file_of_the_package_ships_in_the_wheel():
    """Each file under cds/ that is not Python source (templates, migrations' template, the rule pack that
    cds/packaged_rules links to) matches pyproject's package-data, so the wheel carries it."""
    import os
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = {path for pattern in config["package-data"]["cds"] for path in PACKAGE.glob(pattern)}
    data = {Path(folder) / name for folder, _, names in os.walk(PACKAGE, followlinks=True)
            if "__pycache__" not in Path(folder).parts
            for name in names if not name.endswith((".py", ".pyc"))}
    assert (PACKAGE / "packaged_rules" / "pack.yaml") in data
    assert sorted(str(p.relative_to(PACKAGE)) for p in data - shipped) == []
    assert (PACKAGE / "packaged_rules").resolve() == PACKAGE.parent / "rules"

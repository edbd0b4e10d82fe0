"""The package layout: imports flow one way through the stages, no modules import each other in a loop, and
the decision core is pure.

Every import is read from the source (``imports_in``), wherever it is and however it is written: at module
level, inside a function, under ``if TYPE_CHECKING:`` (an import for annotations still ties the two modules:
the types belong in a module both can import), in a ``try``, and the dynamic ones, ``importlib.import_module``
and ``__import__`` with a constant name (or the constant head of an f-string), ``import_module`` imported by
name or under another name included. A cycle or an upward import cannot be dodged by writing it differently.

The rules, each shown below to fail on an injected violation (a synthetic graph or source, never a real file):

* every module of ``cds/`` belongs to a stage, and imports only its own stage or the stages below;
* no import cycle in ``cds/``, nor among the scripts of ``scripts/`` (which import each other by name);
* the decision core (``cds.decide``, ``cds.rules``, ``cds.hooks``, ``cds.fhir``) takes data and returns data:
  nothing it imports, directly or through the ``cds`` modules it imports, at any level, is a web, HTTP,
  socket, database or server library (``NETWORKED``); its dynamic imports all name their module; a fresh
  interpreter importing every core module loads none of them (``test_importing_the_core_loads_no_network_or
  _database_library``); and evaluating a call's case opens no file and no socket
  (``test_a_case_is_evaluated_without_opening_a_file_or_a_socket``);
* the core does not read or write files (``file_access``), with two named exceptions: ``cds.rules.pack``'s
  ``load`` (and its ``_read_yaml``), which reads the YAML pack once at start-up into a ``RulePack`` that
  evaluation is then given, and ``cds.rules.durable_build``, the build and start-up check of the rules
  engine's library (``python -m cds.rules.durable_build --install``, run by the ``cds`` command before the
  engine is imported), never on a call's path. Both stay in ``cds.rules``: the loader is how a pack becomes
  data, and the build tool's module path is the documented command an operator runs; neither is imported by
  the evaluation path's modules (``cds.decide``) except for the loader's types, which live apart in
  ``cds/rules/model.py``;
* ``import cds`` and ``import cds.errors`` load neither Flask, nor durable-rules, nor SQLAlchemy.
"""

from __future__ import annotations

import ast
import builtins
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cds"
SCRIPTS = ROOT / "scripts"

#: The stages, lowest first. A module may import its own stage and the stages below it, never above.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("cds.errors", "cds.settings", "cds.settings_declare", "cds.settings_model", "cds.db",
              "cds.version", "cds.deadline")),
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

#: The pure decision core: data in, data out.
CORE = ("cds.rules", "cds.hooks", "cds.fhir", "cds.decide")
#: What the core never imports, at any level (lazily included), directly or through another cds module.
NETWORKED = ("flask", "werkzeug", "sqlalchemy", "requests", "urllib3", "httpx", "redis", "socket",
             "http.client", "waitress")
#: The only imports of a ``NETWORKED`` module allowed while the core is imported: the standard library's
#: ``email.utils`` imports ``socket`` (for ``getfqdn``); ``importlib.metadata`` imports ``email``, and
#: pydantic reads ``importlib.metadata`` (its plugins) whenever a model class is made: ``cds.hooks.models``'s
#: own and fhir.resources' R4B models. No socket is made during a call
#: (``test_a_case_is_evaluated_without_opening_a_file_or_a_socket``).
LOADED_BY_THE_STANDARD_LIBRARY = {("email.utils", "socket")}
#: The core's file access, named (see the module's docstring): module -> the functions allowed ("*": all).
FILE_ACCESS_ALLOWED: dict[str, set[str]] = {"cds.rules.pack": {"load", "_read_yaml"},
                                            "cds.rules.durable_build": {"*"}}


# --- reading the imports ------------------------------------------------------------------------------------

class ImportsRead(NamedTuple):
    #: every dotted name imported: ``import a.b`` gives ``a.b``, ``from a import b`` gives ``a.b`` (a
    #: submodule or a name in ``a``), a relative import its absolute name, ``import_module("a.b")`` gives
    #: ``a.b``
    names: frozenset[str]
    #: the lines of dynamic imports whose module cannot be read from the source (no constant name)
    unread: tuple[int, ...]


_IMPORTERS = {"import_module", "__import__"}


def _absolute(target: str, level: int, package: str) -> str:
    if not level:
        return target
    base = package.split(".") if package else []
    base = base[: len(base) - level + 1]
    return ".".join(base + ([target] if target else []))


def _constant_name(node: ast.expr | None) -> str | None:
    """A module name written as a constant, or the dotted head of an f-string (``f"a.b.{x}"``: ``a.b``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value).rpartition(".")[0] or None
    return None


def imports_in(source: str, name: str, *, is_package: bool = False) -> ImportsRead:
    """Every import in ``source`` (the text of module ``name``), wherever it is in the file."""
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    importers = set(_IMPORTERS)  # the names a dynamic import is called by, aliases included
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("importlib", "builtins") and not node.level:
            importers |= {a.asname or a.name for a in node.names if a.name in _IMPORTERS}
    names: set[str] = set()
    unread: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node.module or "", node.level, package)
            names |= {f"{target}.{a.name}" for a in node.names if a.name != "*"} or {target}
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) \
                else None
            if called not in importers:
                continue
            first = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "name"), None)
            target = _constant_name(first)
            if target is None:
                unread.append(node.lineno)
                continue
            if target.startswith("."):  # import_module(".x", package="a") or (".x", __package__)
                anchor = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "package"), None)
                base = package if isinstance(anchor, ast.Name) and anchor.id == "__package__" \
                    else _constant_name(anchor)
                if base is None:
                    unread.append(node.lineno)
                    continue
                level = len(target) - len(target.lstrip("."))
                target = _absolute(target[level:], level, base)
            names.add(target)
            fromlist = node.args[3] if len(node.args) > 3 else next(
                (k.value for k in node.keywords if k.arg == "fromlist"), None)
            if isinstance(fromlist, ast.List | ast.Tuple):  # __import__("a", g, l, ["b"]) imports a.b
                names |= {f"{target}.{c}" for c in map(_constant_name, fromlist.elts) if c}
    return ImportsRead(frozenset(names), tuple(sorted(unread)))


def resolve(name: str, known: Iterable[str]) -> str | None:
    """The module of ``known`` that importing ``name`` runs last: its longest known prefix."""
    known = set(known)
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def graph_of(reads: dict[str, ImportsRead]) -> dict[str, set[str]]:
    """Which of these modules each one imports."""
    known = set(reads)
    return {name: {m for n in read.names if (m := resolve(n, known)) and m != name}
            for name, read in reads.items()}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "versions" not in p.parts}


def _reads() -> dict[str, ImportsRead]:
    return {name: imports_in(path.read_text(), name, is_package=path.name == "__init__.py")
            for name, path in _modules().items()}


def _graph() -> dict[str, set[str]]:
    return graph_of(_reads())


def _script_reads() -> dict[str, ImportsRead]:
    """``scripts/*.py`` import each other by their bare names (their folder is put on ``sys.path``)."""
    return {path.stem: imports_in(path.read_text(), path.stem) for path in SCRIPTS.glob("*.py")}


# --- the rules ----------------------------------------------------------------------------------------------

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


def in_core(module: str) -> bool:
    return any(module == c or module.startswith(c + ".") for c in CORE)


def networked(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in NETWORKED)


def impure(reads: dict[str, ImportsRead]) -> list[str]:
    """Each import of a ``NETWORKED`` module by a core module, or by a cds module a core module imports
    (at any depth), named with the chain of imports that reaches it."""
    graph = graph_of(reads)
    found = set()
    for start in sorted(m for m in reads if in_core(m)):
        via = {start: [start]}
        todo = [start]
        while todo:
            module = todo.pop()
            for name in sorted(reads[module].names):
                if networked(name):
                    found.add(f"{' -> '.join(via[module])} imports {name}")
            for nxt in sorted(graph[module] - set(via)):
                via[nxt] = [*via[module], nxt]
                todo.append(nxt)
    return sorted(found)


def unread_in_core(reads: dict[str, ImportsRead]) -> list[str]:
    return [f"{name}:{line}" for name, read in sorted(reads.items()) if in_core(name) for line in read.unread]


_FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "glob", "rglob", "iterdir",
               "mkdir", "unlink", "rmdir", "touch", "exists", "is_file", "is_dir", "walk", "listdir",
               "scandir"}
_FILE_MODULES = {"io", "os", "shutil", "tempfile", "tarfile", "zipfile", "fcntl", "glob", "subprocess",
                 "sqlite3", "mmap"}


def file_access(source: str) -> list[tuple[str, int, str]]:
    """Where ``source`` reaches files: ``(function, line, what)``; ``function`` is the outermost function
    (``<module>`` at module level)."""
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if function == "<module>" and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.ClassDef) and function == "<module>":
                inner = "<module>"
            if isinstance(child, ast.Call):
                func = child.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(
                    func, ast.Attribute) else None
                if called in _FILE_CALLS:
                    found.append((inner, child.lineno, f"{called}()"))
            elif isinstance(child, ast.Import | ast.ImportFrom):
                modules = [a.name for a in child.names] if isinstance(child, ast.Import) else \
                    [child.module or ""] if not child.level else []
                found.extend((inner, child.lineno, f"import {m}") for m in modules
                             if m.split(".")[0] in _FILE_MODULES)
            visit(child, inner)

    visit(ast.parse(source), "<module>")
    return found


def core_file_access(sources: dict[str, str]) -> list[str]:
    """File access in the core outside ``FILE_ACCESS_ALLOWED``."""
    return [f"{name}:{line} {function}: {what}"
            for name, source in sorted(sources.items()) if in_core(name)
            for function, line, what in file_access(source)
            if not ({"*", function} & FILE_ACCESS_ALLOWED.get(name, set()))]


# --- the repository holds to them --------------------------------------------------------------------------

def test_every_module_belongs_to_a_stage():
    assert [m for m in _graph() if stage_of(m) < 0] == []


def test_no_import_cycles():
    assert cycles(_graph()) == []


def test_no_import_cycles_among_the_scripts():
    graph = graph_of(_script_reads())
    assert graph["fixtures_dxa"] == {"fixtures_common"}  # the reader sees the scripts' imports of each other
    assert cycles(graph) == []


def test_imports_flow_one_way_through_the_stages():
    assert against_the_flow(_graph()) == []


def test_the_core_imports_no_network_or_database_library():
    assert impure(_reads()) == []


def test_every_dynamic_import_in_the_core_names_its_module():
    assert unread_in_core(_reads()) == []


def test_the_core_reaches_files_only_where_named():
    sources = {name: path.read_text() for name, path in _modules().items()}
    assert core_file_access(sources) == []
    # the exceptions are real: each names access that is there
    assert {f for f, _, _ in file_access(sources["cds.rules.pack"])} == {"load", "_read_yaml"}
    assert file_access(sources["cds.rules.durable_build"])


def _core_modules() -> list[str]:
    return sorted(m for m in _modules() if in_core(m))


_WATCH = r"""
import builtins, importlib, json, sys
networked, modules = json.loads(sys.argv[1]), sys.argv[2:]
seen = set()

def watched(name, importer):
    if any(name == n or name.startswith(n + ".") for n in networked):
        seen.add((importer, name))

real_import, real_import_module = builtins.__import__, importlib.import_module

def import_(name, globals=None, locals=None, fromlist=(), level=0):
    if not level:  # a relative import stays inside its own package
        importer = (globals or {}).get("__name__", "?")
        for full in [name, *(f"{name}.{item}" for item in fromlist or ())]:
            watched(full, importer)
    return real_import(name, globals, locals, fromlist, level)

def import_module(name, package=None):
    if not name.startswith("."):
        watched(name, sys._getframe(1).f_globals.get("__name__", "?"))
    return real_import_module(name, package)

builtins.__import__, importlib.import_module = import_, import_module
for module in modules:
    real_import_module(module)
loaded = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in networked))
print(json.dumps({"loaded": loaded, "imports": sorted(seen)}))
"""


def loaded_by_importing(modules: list[str]) -> dict[str, list]:
    """Import ``modules`` in a fresh interpreter: the ``NETWORKED`` modules then in ``sys.modules``, and every
    import statement (or ``import_module``) of one, with the module that ran it."""
    done = subprocess.run([sys.executable, "-c", _WATCH, json.dumps(NETWORKED), *modules], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_core_loads_no_network_or_database_library():
    found = loaded_by_importing(_core_modules())
    assert {tuple(pair) for pair in found["imports"]} <= LOADED_BY_THE_STANDARD_LIBRARY
    assert set(found["loaded"]) <= {name for _, name in LOADED_BY_THE_STANDARD_LIBRARY}


@pytest.mark.parametrize("module", ["cds", "cds.errors"])
def test_importing_the_package_loads_no_framework(module):
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert module in loaded
    assert [m for m in loaded if m.split(".")[0] in ("flask", "werkzeug", "durable", "sqlalchemy")] == []


def test_reading_a_default_loads_no_settings_model():
    """The core reads defaults from ``cds.settings``: its declarations load without pydantic-settings (which
    loads asyncio, and so socket); ``settings.load`` reads the typed model at start-up."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, cds.settings; cds.settings.default('SOURCE_LABEL'); "
         "print(' '.join(sorted(sys.modules)))"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert "cds.settings" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("pydantic_settings", "asyncio", "socket")] == []


@contextmanager
def no_files_or_sockets() -> Iterator[list[str]]:
    """Opening a file (``open``, ``io.open``, ``os.open``, ``io.open_code``: an import reads one too) or
    making a socket raises, and is listed."""
    attempts: list[str] = []

    def refuse(what: str):
        def refused(*args, **kwargs):
            attempts.append(f"{what}{args[:1]}")
            raise OSError(f"{what} refused during a call")
        return refused

    patched = [(builtins, "open"), (io, "open"), (io, "open_code"), (os, "open"), (socket, "socket"),
               (socket, "create_connection")]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in patched]
    for owner, attr in patched:
        setattr(owner, attr, refuse(f"{owner.__name__}.{attr}"))
    try:
        yield attempts
    finally:
        for owner, attr, value in saved:
            setattr(owner, attr, value)


def test_a_case_is_evaluated_without_opening_a_file_or_a_socket():
    from fixture_check import FIXTURES, SERVICE, expected_for

    from cds.call.prefetch import gather
    from cds.decide.case import build_case
    from cds.decide.evaluate import Evaluator
    from cds.fhir.gathered import Gathered
    from cds.hooks.envelope import parse_hook_request
    from cds.hooks.services import discovery_document, prefetch_templates
    from cds.rules import pack as rulepack
    from cds.toolkit.request import build_hook_request, choose_service

    pack = rulepack.load()  # the pack is read at start-up
    evaluator = Evaluator(pack)
    path = FIXTURES / "low-estradiol-on-ai" / "in-19.9-pg-ml-warning.json"
    expected = expected_for(path)
    hook = expected["hook"]
    service = choose_service(discovery_document(pack), hook, SERVICE[hook])
    body = build_hook_request(json.loads(path.read_text()), hook, service)
    now = dt.datetime.fromisoformat(expected["at"]).replace(tzinfo=dt.UTC)

    def evaluate():
        request = parse_hook_request(body, hook)
        gathered = Gathered()
        gather(request, prefetch_templates(pack), None, gathered)
        case = build_case(SERVICE[hook], request, gathered, now, relevant=evaluator.relevant)
        derived = evaluator.derive(case)
        return derived, evaluator.evaluate(case, derived=derived)

    before = evaluate()[1]  # once as a call would first run: what it imports lazily, imported
    with no_files_or_sockets() as attempts:
        derived, evaluation = evaluate()
    assert attempts == []
    assert derived.firings
    cards = sorted((c["source"]["topic"]["code"], c["indicator"]) for c in evaluation.cards)
    assert cards == sorted((c["rule"], c["indicator"]) for c in expected["cards"]) != []
    assert [c["summary"] for c in evaluation.cards] == [c["summary"] for c in before.cards]


def test_the_call_time_check_catches_a_file_or_a_socket():
    with no_files_or_sockets() as attempts:
        with pytest.raises(OSError, match="refused"):
            Path(__file__).read_text()
        with pytest.raises(OSError, match="refused"):
            socket.create_connection(("127.0.0.1", 9))
    assert [a.split("(")[0] for a in attempts] == ["io.open", "socket.create_connection"]
    assert Path(__file__).read_text()  # put back


def test_durable_rules_and_fhir_resources_each_have_one_importer():
    importers: dict[str, set[str]] = {"durable": set(), "fhir": set()}
    for name, path in _modules().items():
        source = path.read_text()
        names = set(imports_in(source, name, is_package=path.name == "__init__.py").names)
        names |= {node.value for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and node.value.startswith(("fhir.resources", "durable."))}
        for mod in names:
            top = mod.split(".")[0]
            if top in importers:
                importers[top].add(name)
    assert importers == {"durable": {"cds.rules.engine"}, "fhir": {"cds.fhir.parse"}}


# --- each rule fails on a violation ------------------------------------------------------------------------

def _names(source: str, name: str = "cds.decide.cards", **kw: bool) -> set[str]:
    return set(imports_in(source, name, **kw).names)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import cds.web.app", {"cds.web.app"}),
        ("import cds.web.app as app", {"cds.web.app"}),
        ("from cds.web import app", {"cds.web.app"}),
        ("from cds.web.app import create_app", {"cds.web.app.create_app"}),
        ("from ..web import app", {"cds.web.app"}),
        ("from . import facts", {"cds.decide.facts"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cds.web.app import create_app\n",
         {"typing.TYPE_CHECKING", "cds.web.app.create_app"}),
        ("import typing\nif typing.TYPE_CHECKING:\n    import cds.web.app\n", {"typing", "cds.web.app"}),
        ("def card():\n    from cds.web.app import create_app\n    return create_app\n",
         {"cds.web.app.create_app"}),
        ("class Card:\n    def render(self):\n        import cds.web.app\n", {"cds.web.app"}),
        ("try:\n    import cds.web.app\nexcept ImportError:\n    pass\n", {"cds.web.app"}),
        ('import importlib\nimportlib.import_module("cds.web.app")\n', {"importlib", "cds.web.app"}),
        ('import importlib as il\ndef f():\n    return il.import_module("cds.web.app")\n',
         {"importlib", "cds.web.app"}),
        ('from importlib import import_module\nimport_module("cds.web.app")\n',
         {"importlib.import_module", "cds.web.app"}),
        ('from importlib import import_module as load\nload("cds.web.app")\n',
         {"importlib.import_module", "cds.web.app"}),
        ('import importlib\nimportlib.import_module(name="cds.web.app")\n', {"importlib", "cds.web.app"}),
        ('import importlib\nimportlib.import_module(".app", "cds.web")\n', {"importlib", "cds.web.app"}),
        ('import importlib\nimportlib.import_module("..web.app", __package__)\n',
         {"importlib", "cds.web.app"}),
        ('__import__("cds.web.app")\n', {"cds.web.app"}),
        ('__import__("cds.web", globals(), locals(), ["app"])\n', {"cds.web", "cds.web.app"}),
        ('__import__("cds.web", fromlist=("app",))\n', {"cds.web", "cds.web.app"}),
        ('import builtins\nbuiltins.__import__("cds.web.app")\n', {"builtins", "cds.web.app"}),
        ('import importlib\nimportlib.import_module(f"cds.web.app.{name}")\n', {"importlib", "cds.web.app"}),
    ],
)
def test_the_reader_finds_every_form_of_import(source, expected):
    assert _names(source) == expected


def test_the_reader_lists_a_dynamic_import_it_cannot_read():
    source = "import importlib\n\ndef load(name):\n    return importlib.import_module(name)\n"
    read = imports_in(source, "cds.x")
    assert read.unread == (4,)
    assert unread_in_core({"cds.decide.cards": read}) == ["cds.decide.cards:4"]
    assert unread_in_core({"cds.web.app": read}) == []  # the rule is the core's


def test_the_reader_reads_a_package_relative_to_itself():
    assert _names("from . import pack\nfrom .check import check\n", "cds.rules", is_package=True) == {
        "cds.rules.pack", "cds.rules.check.check"}


@pytest.mark.parametrize(
    "added",
    [
        'import importlib\nimportlib.import_module("cds.web.app")\n',
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cds.web.app import create_app\n",
        "def cards():\n    from cds.web import app\n",
        '__import__("cds.web.app")\n',
    ],
)
def test_an_upward_import_added_to_the_cards_fails_the_layout(added):
    reads = _reads()
    path = PACKAGE / "decide" / "cards.py"
    reads["cds.decide.cards"] = imports_in(path.read_text() + "\n" + added, "cds.decide.cards")
    assert "cds.decide.cards (decide) imports cds.web.app (web)" in against_the_flow(graph_of(reads))
    assert any(c for c in cycles(graph_of(reads)) if "cds.decide.cards" in c)  # the app imports the cards


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


def test_a_cycle_through_type_checking_imports_is_found():
    reads = {
        "cds.rules.pack": imports_in("from cds.rules.check import check\n", "cds.rules.pack"),
        "cds.rules.check": imports_in(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cds.rules.pack import Rule\n",
            "cds.rules.check"),
    }
    assert cycles(graph_of(reads)) == [["cds.rules.check", "cds.rules.pack"]]


def test_a_cycle_among_the_scripts_is_found():
    reads = _script_reads()
    reads["fixtures_common"] = imports_in(
        (SCRIPTS / "fixtures_common.py").read_text() + "\ndef f():\n    import fixtures_catalogue\n",
        "fixtures_common")
    assert [c for c in cycles(graph_of(reads)) if "fixtures_common" in c] == [
        ["fixtures_ai_course", "fixtures_catalogue", "fixtures_common", "fixtures_dxa", "fixtures_newrules",
         "fixtures_underway", "fixtures_values"]]


def test_the_flow_check_finds_an_upward_import():
    graph = {"cds.rules.pack": {"cds.decide.cards"}, "cds.decide.cards": {"cds.rules.pack"}}
    assert against_the_flow(graph) == ["cds.rules.pack (rules) imports cds.decide.cards (decide)"]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("cds.fhir.gathered", "import requests\n", ["cds.fhir.gathered imports requests"]),
        ("cds.fhir.gathered", "def fetch():\n    from urllib3 import PoolManager\n",
         ["cds.fhir.gathered imports urllib3.PoolManager"]),
        ("cds.decide.cards", "from http import client\n", ["cds.decide.cards imports http.client"]),
        ("cds.decide.cards", 'import importlib\nimportlib.import_module("flask")\n',
         ["cds.decide.cards imports flask"]),
        ("cds.hooks.models", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlalchemy\n",
         ["cds.hooks.models imports sqlalchemy"]),
        ("cds.rules.check", "import socket\n", ["cds.rules.check imports socket"]),
        ("cds.rules.check", "from http import HTTPStatus\n", []),  # http itself is data
        ("cds.web.app", "import flask\n", []),  # outside the core
    ],
)
def test_the_purity_check_finds_a_networked_import(module, source, expected):
    assert impure({module: imports_in(source, module)}) == expected


def test_the_purity_check_follows_the_core_into_the_modules_it_imports():
    reads = {
        "cds.decide.cards": imports_in("from cds.deadline import Deadline\n", "cds.decide.cards"),
        "cds.deadline": imports_in("def session():\n    import requests\n", "cds.deadline"),
    }
    assert impure(reads) == ["cds.decide.cards -> cds.deadline imports requests"]


def test_the_purity_check_finds_the_fhir_client_back_in_the_core():
    reads = _reads()
    client = PACKAGE / "call" / "fhir_client.py"
    reads["cds.fhir.client"] = imports_in(client.read_text(), "cds.fhir.client")
    assert "cds.fhir.client imports requests" in impure(reads)


def test_the_import_check_in_a_fresh_interpreter_sees_a_networked_library():
    found = loaded_by_importing(["cds.errors", "http.client"])
    assert "http.client" in found["loaded"]
    assert not {tuple(pair) for pair in found["imports"]} <= LOADED_BY_THE_STANDARD_LIBRARY


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("cds.decide.cards", "def card(path):\n    return open(path).read()\n",
         ["cds.decide.cards:2 card: open()"]),
        ("cds.fhir.parse", "def parse(p):\n    return p.read_text()\n",
         ["cds.fhir.parse:2 parse: read_text()"]),
        ("cds.hooks.services", "import tempfile\n", ["cds.hooks.services:1 <module>: import tempfile"]),
        ("cds.rules.pack", "def other(p):\n    return p.read_bytes()\n",
         ["cds.rules.pack:2 other: read_bytes()"]),
        ("cds.rules.pack", "def load(p):\n    return p.read_bytes()\n", []),  # the named exception
        ("cds.web.app", "def page(p):\n    return open(p)\n", []),  # outside the core
    ],
)
def test_the_file_check_finds_file_access(module, source, expected):
    assert core_file_access({module: source}) == expected


# --- packaging ----------------------------------------------------------------------------------------------

def test_every_data_file_of_the_package_ships_in_the_wheel():
    """Each file under cds/ that is not Python source (templates, migrations' template, the rule pack that
    cds/packaged_rules links to) matches pyproject's package-data, so the wheel carries it."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = {path for pattern in config["package-data"]["cds"] for path in PACKAGE.glob(pattern)}
    data = {Path(folder) / name for folder, _, names in os.walk(PACKAGE, followlinks=True)
            if "__pycache__" not in Path(folder).parts
            for name in names if not name.endswith((".py", ".pyc"))}
    assert (PACKAGE / "packaged_rules" / "pack.yaml") in data
    assert sorted(str(p.relative_to(PACKAGE)) for p in data - shipped) == []
    assert (PACKAGE / "packaged_rules").resolve() == PACKAGE.parent / "rules"

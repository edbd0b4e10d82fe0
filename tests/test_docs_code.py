"""The documentation names what the code has: the README's pipeline table lists every module under cds/
and only those, the exception tree drawn in cds/errors.py is the classes', the README's rules tables name the
pack's rules and thresholds with their defaults, and every file a docstring or a doc names exists."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from cds import errors
from cds.rules import pack as rulepack

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: a backticked name in a table cell
TICKED = re.compile(r"`([^`]+)`")


def _section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    rest = text[start + len(heading) + 2:]
    stop = re.search(rf"^#{{1,{len(level)}}} ", rest, re.M)
    return rest[:stop.start()] if stop else rest


def _table(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) > 2, "no table found"
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines[2:]]


# --- the pipeline table ----------------------------------------------------------------------------


def _pipeline() -> tuple[set[Path], set[Path]]:
    """The files and folders the README's pipeline table names (modules relative to the row's package)."""
    named_files: set[Path] = set()
    named_folders: set[Path] = set()
    for stage, package, modules in _table(_section(README, "## The pipeline, by file")):
        folders = [t for t in TICKED.findall(package) if t.startswith("cds/") and t.endswith("/")]
        assert folders, f"the {stage!r} row names no cds/ package"
        for name in TICKED.findall(modules):
            if name.endswith(".py") and " " not in name:
                named_files.add(ROOT / name if name.startswith("cds/") else ROOT / folders[0] / name)
            elif name.startswith("cds/") and name.endswith("/"):
                named_folders.add(ROOT / name)
        named_folders.update(ROOT / f for f in folders)
    return named_files, named_folders


def _modules() -> set[Path]:
    """Every module under cds/; a package is its folder (``__init__.py``), a folder the table names as a
    whole (``cds/migrations/``) stands for what is in it."""
    _, folders = _pipeline()
    whole = {f for f in folders if not (f / "__init__.py").is_file() or f.name == "migrations"}
    return {p for p in (ROOT / "cds").rglob("*.py")
            if p.name != "__init__.py" and not any(w in p.parents for w in whole)}


def test_every_module_under_cds_is_in_the_readme_pipeline_table():
    files, _ = _pipeline()
    missing = sorted(str(p.relative_to(ROOT)) for p in _modules() - files)
    assert not missing, f"README.md's pipeline table does not list: {', '.join(missing)}"


def test_every_name_in_the_readme_pipeline_table_is_a_file():
    files, folders = _pipeline()
    gone = sorted(str(p.relative_to(ROOT)) for p in files if not p.is_file())
    gone += sorted(str(p.relative_to(ROOT)) + "/" for p in folders if not p.is_dir())
    assert not gone, f"README.md's pipeline table names what does not exist: {', '.join(gone)}"


def test_every_package_under_cds_has_its_row():
    _, folders = _pipeline()
    packages = {p.parent for p in (ROOT / "cds").rglob("__init__.py")} - {ROOT / "cds"}
    packages = {p for p in packages if not any(f in p.parents for f in folders)}
    assert packages <= folders, sorted(str(p.relative_to(ROOT)) for p in packages - folders)


# --- the exception tree ----------------------------------------------------------------------------

DRAWN = re.compile(r"^    (?P<lead>[│├└─ ]*)(?P<name>[A-Z]\w+)\s+(?P<status>\d{3})\s+(?P<severity>\w+) / "
                   r"(?P<code>[\w-]+)")


def _drawing() -> dict[str, tuple[str | None, int, str, str]]:
    """Each class drawn in cds/errors.py's docstring: its parent (by indentation), status, severity, code."""
    drawn: dict[str, tuple[str | None, int, str, str]] = {}
    parents: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        m = DRAWN.match(line)
        if not m:
            continue
        depth = len(m["lead"]) // 4
        del parents[depth:]
        assert m["name"] not in drawn, f"{m['name']} is drawn twice"
        drawn[m["name"]] = (parents[-1] if parents else None, int(m["status"]), m["severity"], m["code"])
        parents.append(m["name"])
    return drawn


def _error_classes() -> dict[str, type[errors.CdsError]]:
    return {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.CdsError) and cls.__module__ == errors.__name__}


def test_the_drawn_exception_tree_has_every_class_and_no_other():
    assert set(_drawing()) == set(_error_classes())


@pytest.mark.parametrize("name", sorted(_error_classes()))
def test_the_drawn_exception_tree_says_what_each_class_answers(name):
    cls = _error_classes()[name]
    parent, status, severity, code = _drawing()[name]
    base = cls.__bases__[0]
    assert parent == (None if base is Exception else base.__name__), f"{name}: parent"
    assert (status, severity, code) == (cls.status, cls.severity, cls.code), f"{name}: status/severity/code"
    issue = cls("the message").to_operation_outcome()["issue"][0]
    assert (issue["severity"], issue["code"]) == (severity, code)


# --- the rules tables ------------------------------------------------------------------------------

PACK = rulepack.load()
#: a threshold's name followed by its default, as the README writes it ("`name` < 20", "≤ `name` −2.5")
THRESHOLD_VALUE = re.compile(r"`([a-z][a-z0-9_]*_[a-z0-9_]+)`\s*(?:[<>≤≥]=?\s*)?([−-]?\d+(?:\.\d+)?)?")


def _rule_rows() -> list[list[str]]:
    rules = _section(README, "## Rules")
    rows = _table(_section(rules, "### Cards"))
    rows += _table(_section(rules, "### Derived facts (forward chaining)"))
    for row in rows:
        assert len(row) == 4, f"README rules table: a row needs 4 cells, not {len(row)}: {row[0]}"
    return rows


def _rule_ids(cell: str) -> set[str]:
    """The rule ids of a first cell: ``a-b-c``, and ``-d-e`` short for ``a-d-e``."""
    names = TICKED.findall(cell)
    prefix = names[0].split("-")[0]
    return {prefix + n if n.startswith("-") else n for n in names}


def test_the_readme_rules_tables_name_every_rule_of_the_pack_and_no_other():
    named = set().union(*(_rule_ids(row[0]) for row in _rule_rows()))
    ids = {r.id for r in PACK.rules}
    assert not ids - named, f"README.md's rules tables leave out: {sorted(ids - named)}"
    assert not named - ids, f"README.md's rules tables name rules the pack lacks: {sorted(named - ids)}"


def test_the_readme_rules_tables_name_real_thresholds_with_their_defaults():
    """A card's threshold column names thresholds only; anywhere else a name followed by a number is a
    threshold with its default ("woman younger than `premenopausal_age_limit` 50")."""
    rules = _section(README, "## Rules")
    cards = _table(_section(rules, "### Cards"))
    for row in _rule_rows():
        for name, value in THRESHOLD_VALUE.findall(" | ".join(row[1:])):
            if value or (row in cards and f"`{name}`" in row[2]):
                assert name in PACK.thresholds, f"{row[0]}: {name} is not in rules/thresholds.yaml"
            if value:
                written = float(value.replace("−", "-"))
                default = PACK.threshold(name)
                assert written == default, f"{row[0]}: {name} is {default}, not {value}"


# --- file names in docstrings and docs -------------------------------------------------------------

#: a path from the repository root: cds/..., tests/..., scripts/... ending in .py, or a folder of cds/
ROOTED = re.compile(r"(?<![\w/.-])((?:cds|tests|scripts)/[\w/.-]*\w\.py|cds/(?:[\w-]+/)+)(?![\w/*])")
#: a bare module name (``offline.py``)
BARE = re.compile(r"(?<![\w/.*-])(\w+\.py)\b")
#: files the docs name as history, saying that they were removed
REMOVED = {("docs/performance.md", "cds/web/worker.py"), ("docs/robustness.md", "cds/web/worker.py")}


def _docstrings() -> list[tuple[Path, str]]:
    out = []
    for path in sorted((ROOT / "cds").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if doc:
            out.append((path, doc))
    return out


def _named_paths() -> list[tuple[str, str]]:
    """(where, path) for every file a module docstring or a doc under docs/ names as a path; a bare name in
    a package's docstring is one of the package's modules."""
    named = []
    for path, doc in _docstrings():
        where = str(path.relative_to(ROOT))
        named += [(where, p) for p in ROOTED.findall(doc)]
        if path.name == "__init__.py":
            named += [(where, str((path.parent / p).relative_to(ROOT))) for p in BARE.findall(doc)]
    for doc_path in sorted((ROOT / "docs").rglob("*.md")):
        named += [(str(doc_path.relative_to(ROOT)), p)
                  for p in ROOTED.findall(doc_path.read_text(encoding="utf-8"))]
    return [(where, path) for where, path in named if (where, path) not in REMOVED]


def test_the_named_paths_are_found():
    assert len(_named_paths()) > 50  # the patterns find what the docs name


def test_every_file_a_docstring_or_a_doc_names_exists():
    gone = sorted({f"{where}: {path}" for where, path in _named_paths() if not (ROOT / path).exists()})
    assert not gone, "named but not there:\n" + "\n".join(gone)


def test_a_module_name_in_a_docstring_is_a_module():
    """A bare ``name.py`` in any module's docstring names a file of the source tree (a renamed module's old
    name is caught here)."""
    files = {p.name for top in ("cds", "tests", "scripts") for p in (ROOT / top).rglob("*.py")}
    gone = sorted({f"{path.relative_to(ROOT)}: {name}" for path, doc in _docstrings()
                   for name in BARE.findall(doc) if name not in files})
    assert not gone, "named but not there:\n" + "\n".join(gone)

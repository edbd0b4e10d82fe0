"""The rule pack: versioned, cited rule files in ``rules/`` loaded, checked and compiled.

Layout of a pack folder::

    pack.yaml          id, version, title
    thresholds.yaml    named default thresholds (value, unit, help, source)
    valuesets.yaml     codes: medications by class, lab analytes with units, DXA sites, orders
    rules/*.yaml       one rule per file (see docs/rules.md for the schema)
    archive/           retired rules, never loaded

A site's threshold overrides (``CDS_SITE_CONFIG``) are applied on top of ``thresholds.yaml``. The pack's
content hash covers every loaded file plus the overrides, so an audit record names exactly what ran.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RulePackError
from .templating import references, strings_in

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "rules"
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
COMPARISONS = {"lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte", "ne": "$neq"}
STATUSES = {"active", "draft", "retired"}
INDICATORS = {"info", "warning", "critical"}
#: fact types produced by the facts stage; derived types come from rules' ``derive``
BASE_FACTS = {"patient", "medication", "lab", "dxa", "dxa_change", "problem", "order"}


@dataclass(frozen=True)
class Rule:
    id: str
    version: str
    status: str
    kind: str
    title: str
    when: str
    then: str
    citations: list[dict[str, Any]]
    match: dict[str, list[dict[str, Any]]]
    thresholds: list[str] = field(default_factory=list)
    needs: list[dict[str, Any]] = field(default_factory=list)
    derive: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    path: str = ""

    @property
    def aliases(self) -> list[str]:
        return [c.get("as") or f"m{i}" for i, c in enumerate(self.match.get("all", []))]


@dataclass(frozen=True)
class RulePack:
    id: str
    version: str
    title: str
    content_hash: str
    thresholds: dict[str, dict[str, Any]]
    valuesets: dict[str, Any]
    rules: list[Rule]
    directory: str

    def threshold(self, name: str) -> float:
        return self.thresholds[name]["value"]

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @property
    def active_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.status == "active"]


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RulePackError(f"{path}: cannot read: {exc}") from exc


def load(directory: str | Path | None = None, site_config: str | Path | None = None) -> RulePack:
    """Load and check a pack; raise ``RulePackError`` listing every problem found."""
    root = Path(directory) if directory else DEFAULT_DIR
    if not (root / "pack.yaml").is_file():
        raise RulePackError(f"{root}: not a rule pack (no pack.yaml)")
    digest = hashlib.sha256()
    files = [root / "pack.yaml", root / "thresholds.yaml", root / "valuesets.yaml",
             *sorted((root / "rules").glob("*.yaml"))]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    meta = _read_yaml(root / "pack.yaml") or {}
    thresholds = {k: dict(v) for k, v in ((_read_yaml(root / "thresholds.yaml") or {}).get("thresholds") or {}).items()}
    problems: list[str] = []
    if site_config:
        site_path = Path(site_config)
        digest.update(b"site\0" + site_path.read_bytes())
        overrides = ((_read_yaml(site_path) or {}).get("thresholds") or {})
        for name, value in overrides.items():
            if name not in thresholds:
                problems.append(f"{site_path}: override of unknown threshold {name!r}")
            elif not isinstance(value, int | float) or isinstance(value, bool):
                problems.append(f"{site_path}: threshold {name} must be a number, got {value!r}")
            else:
                thresholds[name]["value"] = value
                thresholds[name]["site_override"] = True
    valuesets = _read_yaml(root / "valuesets.yaml") or {}
    rules = []
    for path in files[3:]:
        data = _read_yaml(path)
        if not isinstance(data, dict):
            problems.append(f"{path.name}: not a mapping")
            continue
        try:
            rules.append(_rule_from(data, path))
        except (KeyError, TypeError) as exc:
            problems.append(f"{path.name}: missing or malformed field {exc}")
    pack = RulePack(id=str(meta.get("id", "")), version=str(meta.get("version", "")),
                    title=str(meta.get("title", "")), content_hash=digest.hexdigest(),
                    thresholds=thresholds, valuesets=valuesets, rules=rules, directory=str(root))
    problems += check(pack)
    if problems:
        raise RulePackError(f"rule pack {root} has {len(problems)} problem(s)", details=problems)
    return pack


def _rule_from(data: dict[str, Any], path: Path) -> Rule:
    return Rule(id=data["id"], version=str(data["version"]), status=data["status"], kind=data["kind"],
                title=data["title"], when=data["when"], then=data["then"], citations=data["citations"],
                match=data["match"], thresholds=data.get("thresholds", []), needs=data.get("needs", []),
                derive=data.get("derive"), card=data.get("card"), path=path.name)


def check(pack: RulePack) -> list[str]:
    """Every problem in a pack: schema, versions, citations, thresholds, value sets, card wording."""
    problems: list[str] = []
    if not SEMVER.match(pack.version):
        problems.append(f"pack.yaml: version {pack.version!r} is not semantic (MAJOR.MINOR.PATCH)")
    for name, spec in pack.thresholds.items():
        if not isinstance(spec.get("value"), int | float) or not spec.get("source") or not spec.get("unit"):
            problems.append(f"thresholds.yaml: {name} needs a numeric value, a unit and a source")
    derived_types = {r.derive.get("t") for r in pack.rules if r.derive}
    known_facts = BASE_FACTS | derived_types
    seen: set[str] = set()
    for rule in pack.rules:
        where = rule.path or rule.id
        problems += [f"{where}: {p}" for p in _check_rule(rule, pack, known_facts)]
        if rule.id in seen:
            problems.append(f"{where}: duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    return problems


def _check_rule(rule: Rule, pack: RulePack, known_facts: set[str]) -> list[str]:
    problems = []
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", rule.id):
        problems.append(f"id {rule.id!r} must be lower-case words joined by hyphens")
    if rule.path and rule.path != f"{rule.id}.yaml":
        problems.append(f"file name should be {rule.id}.yaml")
    if not SEMVER.match(rule.version):
        problems.append(f"version {rule.version!r} is not semantic (MAJOR.MINOR.PATCH)")
    if rule.status not in STATUSES:
        problems.append(f"status {rule.status!r} not one of {sorted(STATUSES)}")
    if rule.kind not in {"derived", "card"}:
        problems.append(f"kind {rule.kind!r} must be 'derived' or 'card'")
    if not rule.citations:
        problems.append("needs at least one citation")
    for citation in rule.citations:
        if not str(citation.get("url", "")).startswith("https://") or not citation.get("title"):
            problems.append(f"citation {citation!r} needs a title and an https:// url")
    if not rule.match.get("all"):
        problems.append("match.all needs at least one condition")
    used_thresholds: set[str] = set()
    for section in ("all", "none"):
        for cond in rule.match.get(section, []) or []:
            if cond.get("fact") not in known_facts:
                problems.append(f"match.{section}: unknown fact type {cond.get('fact')!r}")
            if section == "none" and cond.get("fact") not in BASE_FACTS:
                problems.append(f"match.none: {cond.get('fact')!r} is derived; negation only over base facts")
            used_thresholds |= _thresholds_in(cond.get("where", {}))
    for name in used_thresholds | set(rule.thresholds):
        if name not in pack.thresholds:
            problems.append(f"refers to threshold {name!r}, which thresholds.yaml does not define")
    classes = set(pack.valuesets.get("medications", {}))
    analytes = set(pack.valuesets.get("labs", {}))
    orders = set(pack.valuesets.get("orders", {}))
    for cond in rule.match.get("all", []) + (rule.match.get("none") or []):
        w = cond.get("where", {})
        if "drug_class" in w and w["drug_class"] not in classes:
            problems.append(f"value set {w['drug_class']!r} is not in valuesets.yaml medications")
        if cond.get("fact") in {"lab", "problem"} and "analyte" in w and w["analyte"] not in analytes:
            problems.append(f"analyte {w['analyte']!r} is not in valuesets.yaml labs")
        if cond.get("fact") == "order" and "kind" in w and w["kind"] not in orders:
            problems.append(f"order kind {w['kind']!r} is not in valuesets.yaml orders")
    if rule.kind == "derived" and not (rule.derive and rule.derive.get("t")):
        problems.append("a derived rule needs derive.t")
    if rule.kind == "card":
        problems += _check_card(rule, pack, orders)
    return problems


def _check_card(rule: Rule, pack: RulePack, orders: set[str]) -> list[str]:
    problems = []
    card = rule.card or {}
    if not card.get("summary"):
        return ["a card rule needs card.summary"]
    if card.get("indicator") not in INDICATORS:
        problems.append(f"card.indicator must be one of {sorted(INDICATORS)}")
    aliases = set(rule.aliases) | {"threshold", "context"}
    for text in strings_in(card):
        for alias, name in references(text):
            if alias not in aliases:
                problems.append(f"card text refers to {{{alias}.{name}}}, but no condition is named {alias!r}")
            if alias == "threshold" and name not in pack.thresholds:
                problems.append(f"card text refers to unknown threshold {name!r}")
    longest = _longest_summary(card["summary"], pack)
    if longest >= 140:
        problems.append(f"card.summary can reach {longest} characters; it must stay under 140")
    for reason in card.get("override_reasons", []):
        if not reason.get("code") or not reason.get("display"):
            problems.append("every override reason needs a code and a display")
    for suggestion in card.get("suggestions", []):
        if not suggestion.get("label") or not suggestion.get("actions"):
            problems.append("every suggestion needs a label and actions")
        if suggestion.get("unless_ordered") and suggestion["unless_ordered"] not in orders:
            problems.append(f"unless_ordered {suggestion['unless_ordered']!r} is not in valuesets.yaml orders")
        for action in suggestion.get("actions", []):
            if action.get("type") not in {"create", "update", "delete"}:
                problems.append(f"action type {action.get('type')!r} must be create, update or delete")
            if action.get("type") == "create" and not isinstance(action.get("resource"), dict):
                problems.append("a create action needs a resource")
            if action.get("type") in {"update", "delete"} and not action.get("resource_from"):
                problems.append(f"an {action.get('type')} action needs resource_from (the matched order)")
    return problems


#: widest text a placeholder can produce, for the summary-length check
_PLACEHOLDER_WIDTH = {"ingredient": 15, "site_title": 15, "date": 10, "from_date": 10, "to_date": 10}


def _longest_summary(summary: str, pack: RulePack) -> int:
    from .templating import PLACEHOLDER

    def width(match: re.Match[str]) -> str:
        alias, name, _spec = match.groups()
        if alias == "threshold" and name in pack.thresholds:
            return "x" * len(f"{pack.thresholds[name]['value']:g}")
        if alias == "context":
            return "x" * 40
        return "x" * _PLACEHOLDER_WIDTH.get(name, 8)

    return len(PLACEHOLDER.sub(width, summary))


def _thresholds_in(where: dict[str, Any]) -> set[str]:
    found = set()
    for spec in where.values():
        if isinstance(spec, dict):
            for operand in spec.values():
                if isinstance(operand, dict) and "threshold" in operand:
                    found.add(operand["threshold"])
    return found


# -- compiling to durable-rules JSON ---------------------------------------------------------------------

def _operand(value: Any, pack: RulePack) -> Any:
    if isinstance(value, dict) and "threshold" in value:
        return pack.threshold(value["threshold"])
    if isinstance(value, dict) and "ref" in value:
        alias, name = value["ref"].split(".", 1)
        return {alias: name}
    return value


def compile_condition(cond: dict[str, Any], pack: RulePack) -> dict[str, Any]:
    terms: list[dict[str, Any]] = [{"t": cond["fact"]}]
    for name, spec in (cond.get("where") or {}).items():
        if not isinstance(spec, dict):
            terms.append({name: spec})
            continue
        for op, operand in spec.items():
            if op in COMPARISONS:
                terms.append({COMPARISONS[op]: {name: _operand(operand, pack)}})
            elif op == "eq":
                terms.append({name: _operand(operand, pack)})
            elif op == "in":
                terms.append({"$or": [{name: v} for v in operand]} if len(operand) > 1 else {name: operand[0]})
            elif op == "exists":
                terms.append({"$ex" if operand else "$nex": {name: 1}})
            else:
                raise RulePackError(f"unknown operator {op!r} in condition on {cond['fact']}.{name}")
    return terms[0] if len(terms) == 1 else {"$and": terms}


def compile_rule(rule: Rule, pack: RulePack) -> dict[str, Any]:
    """The rule's durable-rules definition (``{"all": [...]}``), thresholds resolved."""
    body = [{alias: compile_condition(cond, pack)} for alias, cond in zip(rule.aliases, rule.match["all"],
                                                                          strict=True)]
    for index, cond in enumerate(rule.match.get("none") or []):
        body.append({f"n{index}$not": compile_condition(cond, pack)})
    return {"all": body}


# -- the same conditions, evaluated in Python over already-matched facts ----------------------------------

def holds(where: dict[str, Any], scope: dict[str, dict[str, Any]], pack: RulePack) -> bool:
    """Whether ``where`` (keys ``alias.field`` or plain fields of ``scope['']``) holds; used after matching."""
    for key, spec in where.items():
        alias, _, name = key.rpartition(".")
        value = scope.get(alias, {}).get(name)
        checks = spec if isinstance(spec, dict) else {"eq": spec}
        for op, operand in checks.items():
            operand = pack.threshold(operand["threshold"]) if isinstance(operand, dict) and "threshold" in operand \
                else operand
            if op == "in":
                ok = value in operand
            elif op == "exists":
                ok = (value is not None) == bool(operand)
            elif op == "eq":
                ok = value == operand
            elif value is None or not isinstance(value, int | float) or isinstance(value, bool):
                ok = op == "ne" and value != operand
            else:
                ok = {"lt": value < operand, "lte": value <= operand, "gt": value > operand,
                      "gte": value >= operand, "ne": value != operand}[op]
            if not ok:
                return False
    return True

"""The rule pack: versioned, cited rule files in ``rules/`` loaded, checked and compiled.

The packaged pack is ``rules/`` of the source tree, shipped inside the package as ``cds/packaged_rules``
(a link to ``../rules`` in the source tree, the files themselves in a wheel) and found through the package
(``importlib.resources``), in an editable install and an installed wheel alike; ``CDS_RULES_DIR`` or a
command's ``--rules``/``DIR`` names another.

Layout of a pack folder::

    pack.yaml          id, version, title
    thresholds.yaml    named default thresholds (value, unit, help, source)
    valuesets.yaml     codes: medications by class, lab analytes with units, DXA sites, orders
    rules/*.yaml       one rule per file (see docs/rules.md for the schema)
    archive/           retired rules, never loaded

A site's threshold overrides (``CDS_SITE_CONFIG``) are applied on top of ``thresholds.yaml``. The pack's
content hash covers every loaded file plus the overrides, so an audit record names exactly what ran.

A loaded pack is a ``RulePack`` of ``Rule`` (``cds/rules/model.py``, importable from here too).
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from cds.errors import RulePackError
from cds.rules.check import check
from cds.rules.model import Rule, RulePack

#: the packaged rule pack (a wheel is installed unpacked, so this is a folder on disk)
DEFAULT_DIR = Path(str(files("cds") / "packaged_rules"))
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
#: the site configuration's ``units`` switches (docs/site-config.md)
SITE_UNIT_SWITCHES = {"read_g_cm-2_as_g_cm2": "read HL7's DXA unit g/cm-2 (strict UCUM: g.cm2) as g/cm2"}


#: libyaml's safe loader where PyYAML was built with it (the same documents, nine times faster), else PyYAML's
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)
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
    declared = (_read_yaml(root / "thresholds.yaml") or {}).get("thresholds") or {}
    # a bare number has no unit or source: kept as {"value": ...} so the check names what is missing
    thresholds = {k: dict(v) if isinstance(v, dict) else {"value": v} for k, v in declared.items()}
    problems: list[str] = []
    site_units: dict[str, bool] = {}
    if site_config:
        site_path = Path(site_config)
        digest.update(b"site\0" + site_path.read_bytes())
        site = _read_yaml(site_path) or {}
        overrides = site.get("thresholds") or {}
        for name, value in (site.get("units") or {}).items():
            if name not in SITE_UNIT_SWITCHES:
                known = ", ".join(sorted(SITE_UNIT_SWITCHES))
                problems.append(f"{site_path}: unknown units switch {name!r} (known: {known})")
            elif not isinstance(value, bool):
                problems.append(f"{site_path}: units.{name} must be true or false, got {value!r}")
            else:
                site_units[name] = value
        for name, value in overrides.items():
            if name not in thresholds:
                problems.append(f"{site_path}: override of unknown threshold {name!r}")
            elif not isinstance(value, int | float) or isinstance(value, bool):
                problems.append(f"{site_path}: threshold {name} must be a number, got {value!r}")
            else:
                thresholds[name]["value"] = value
                thresholds[name]["site_override"] = True
    valuesets = _read_yaml(root / "valuesets.yaml") or {}
    if isinstance(valuesets, dict):
        valuesets["site_units"] = site_units
    rules = []
    for path in files[3:]:
        data = _read_yaml(path)
        if not isinstance(data, dict):
            problems.append(f"{path.name}: not a mapping")
            continue
        try:
            rules.append(_rule_from(data, path))
        except KeyError as exc:
            problems.append(f"{path.name}: missing field {exc}")
        except TypeError as exc:
            problems.append(f"{path.name}: {exc}")
    pack = RulePack(id=str(meta.get("id", "")), version=str(meta.get("version", "")),
                    title=str(meta.get("title", "")), content_hash=digest.hexdigest(),
                    thresholds=thresholds, valuesets=valuesets, rules=rules, directory=str(root))

    problems += check(pack)
    if problems:
        raise RulePackError(f"rule pack {root} has {len(problems)} problem(s)", details=problems)
    return pack


RULE_FIELDS = {"id", "version", "status", "kind", "title", "when", "then", "citations", "match", "thresholds",
               "needs", "derive", "card"}


def _rule_from(data: dict[str, Any], path: Path) -> Rule:
    unknown = sorted(set(data) - RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown field(s) {', '.join(unknown)}")
    return Rule(id=data["id"], version=str(data["version"]), status=data["status"], kind=data["kind"],
                title=data["title"], when=data["when"], then=data["then"], citations=data["citations"],
                match=data["match"], thresholds=data.get("thresholds", []), needs=data.get("needs", []),
                derive=data.get("derive"), card=data.get("card"), path=path.name)

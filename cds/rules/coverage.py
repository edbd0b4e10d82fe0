"""What the value sets of a rule pack cover, and where each code was verified. Pure code (text out).

``cds rules valuesets`` prints ``coverage_text(pack)``. Medication and order codes carry their provenance
inline (``{code: {tty, display, source, verified}}``); the LOINC codes of the ``labs`` and ``dxa`` sections,
which stay plain lists, take theirs from ``code_sources``. A code with no ``source`` anywhere is a problem
(``missing_sources``), and so is a ``verified: false`` code that does not say why.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cds.rules.pack import RulePack


def _entries(codes: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(code, provenance)`` pairs of a code list or a code -> provenance mapping."""
    if isinstance(codes, Mapping):
        for code, meta in codes.items():
            yield str(code), meta if isinstance(meta, Mapping) else {}
    elif isinstance(codes, Iterable) and not isinstance(codes, str):
        for code in codes:
            yield str(code), {}


def _listed(vs: Mapping[str, Any]) -> Iterator[tuple[str, str, str, Mapping[str, Any]]]:
    """Every code of the value sets: ``(where, system key, code, provenance)``."""
    loinc_sources = (vs.get("code_sources") or {}).get("loinc") or {}
    for cls, spec in (vs.get("medications") or {}).items():
        for ingredient, codes in (spec.get("ingredients") or {}).items():
            for system in ("rxnorm", "atc"):
                for code, meta in _entries(codes.get(system)):
                    yield f"medications.{cls}.{ingredient}", system, code, meta
    for kind, spec in (vs.get("orders") or {}).items():
        for system, codes in spec.items():
            for code, meta in _entries(codes):
                yield f"orders.{kind}", system, code, meta or loinc_sources.get(code, {})
    for name, spec in (vs.get("labs") or {}).items():
        for code, _ in _entries(spec.get("loinc")):
            yield f"labs.{name}", "loinc", code, loinc_sources.get(code, {})
    for site, spec in (vs.get("dxa") or {}).items():
        for kind in ("t_score", "z_score", "bmd"):
            for code, _ in _entries(spec.get(kind)):
                yield f"dxa.{site}.{kind}", "loinc", code, loinc_sources.get(code, {})


def missing_sources(vs: Mapping[str, Any]) -> list[str]:
    """One line per code that does not say where it was verified."""
    return [f"{where}: {system} {code} has no source" for where, system, code, meta in _listed(vs)
            if not meta.get("source")]


def _describe(code: str, meta: Mapping[str, Any]) -> str:
    parts = [code]
    if meta.get("tty"):
        parts.append(str(meta["tty"]))
    if meta.get("display"):
        parts.append(str(meta["display"]))
    flag = "UNVERIFIED" if meta.get("verified") is False else "verified"
    return f"{' '.join(parts)}  [{flag}: {meta.get('source') or 'NO SOURCE'}]"


def coverage_text(pack: RulePack) -> str:
    """The coverage report: per set its codes by system, the names matched, and the verification."""
    vs = pack.valuesets
    systems = vs.get("systems") or {}
    out = [f"Value-set coverage of rule pack {pack.id} {pack.version}", ""]
    for cls, spec in (vs.get("medications") or {}).items():
        out.append(f"medications.{cls} ({spec.get('title', cls)})")
        for ingredient, codes in (spec.get("ingredients") or {}).items():
            names = ", ".join([ingredient, *(str(n) for n in codes.get("names") or [] if n != ingredient)])
            out.append(f"  {ingredient}")
            out.append(f"    names matched in text (whole words, any case): {names}")
            for system in ("rxnorm", "atc"):
                listed = list(_entries(codes.get(system)))
                if not listed:
                    fallback = "ATC and name" if system == "rxnorm" else "name"
                    out.append(f"    {system}: none (matched by {fallback})")
                for code, meta in listed:
                    out.append(f"    {system}: {_describe(code, meta)}")
    loinc_sources = (vs.get("code_sources") or {}).get("loinc") or {}
    for kind, spec in (vs.get("orders") or {}).items():
        out.append(f"orders.{kind} (already in the draft orders: not suggested again)")
        for system, codes in spec.items():
            for code, meta in _entries(codes):
                out.append(f"    {system}: {_describe(code, meta or loinc_sources.get(code, {}))}")
    for name, spec in (vs.get("labs") or {}).items():
        units = ", ".join(map(str, spec.get("units") or {}))
        out.append(f"labs.{name} ({spec.get('title', name)}; units {units})")
        for code, _ in _entries(spec.get("loinc")):
            out.append(f"    loinc: {_describe(code, loinc_sources.get(code, {}))}")
    for site, spec in (vs.get("dxa") or {}).items():
        out.append(f"dxa.{site} ({spec.get('title', site)})")
        for kind in ("t_score", "z_score", "bmd"):
            for code, _ in _entries(spec.get(kind)):
                out.append(f"    {kind} loinc: {_describe(code, loinc_sources.get(code, {}))}")
    listed = list(_listed(vs))
    unverified = [c for _, _, c, m in listed if m.get("verified") is False]
    missing = missing_sources(vs)
    out += ["", f"{len(listed)} codes in {len({s for _, s, _, _ in listed})} systems "
                f"({', '.join(sorted(k for k in systems))}); {len(unverified)} unverified; "
                f"{len(missing)} without a source"]
    out += [f"  {line}" for line in missing]
    return "\n".join(out)

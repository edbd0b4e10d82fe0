"""FHIR models to flat facts: the pure stage between parsing and the rules engine.

Input: parsed R4B models, the hook context, the evaluation time and the rule pack's value sets.
Output: a list of fact dicts (each with a type ``t``), ready for the engine:

    patient     sex, age (at death for a deceased patient), deceased, deceased_date
    medication  one per (order, drug class): ingredient, status, draft, selected, focus, matched_by, started;
                for a monitored class, when the course started and whether it has been checked since
    lab         the latest usable result per analyte, normalised to the analyte's canonical unit
    dxa         the latest scan per site (T-score, Z-score, BMD merged by date)
    dxa_change  the latest scan vs the one before it at the same site
    problem     a result that could not be used (unknown unit, no value, no date, other patient), and why
    order       what the draft orders already order (so a rule does not suggest it again)

References (subjects, medicationReference, selections) are resolved by ``cds.fhir.references``: a resource
whose subject is another patient, or does not resolve to this one, becomes a ``problem``, never data.

Only results with status final, amended or corrected count. The work is linear in the resources: one pass
to classify, then per-analyte and per-site maxima. No I/O, no Flask, no engine.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cds.decide import lab_context
from cds.decide.readings import (
    MEASURE,
    dxa_site,
    dxa_unit_problem,
    observed_date,
    reported_precision,
    shown_value,
    to_date,
)
from cds.fhir import references as fhir_refs
from cds.fhir.relevance import classify_medication
from cds.fhir.units import to_canonical
from cds.fhir.values import Reading
from cds.fhir.values import read as read_value

COUNTED_STATUSES = {"final", "amended", "corrected"}


@dataclass
class FactSet:
    facts: list[dict[str, Any]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: every usable result as reported (value, unit, comparator, date, site), oldest first: the charts of
    #: "why this card" show the patient's results over time, where the facts keep only the latest
    series: list[dict[str, Any]] = field(default_factory=list)

    def of(self, t: str) -> list[dict[str, Any]]:
        return [f for f in self.facts if f["t"] == t]


@dataclass(frozen=True)
class Context:
    patient_id: str | None
    now: dt.datetime
    draft_refs: frozenset[str] = frozenset()
    selections: frozenset[str] = frozenset()
    #: the fullUrls of the call's Bundles, to resolve ``urn:uuid`` references (see ``cds.fhir.references``)
    references: fhir_refs.ReferenceIndex | None = None


def _codings(concept: Any) -> list[tuple[str, str]]:
    if concept is None:
        return []
    return [(c.system or "", c.code or "") for c in (concept.coding or []) if c.code]


def _texts(concept: Any) -> list[str]:
    """The words of a CodeableConcept: its text and its codings' displays."""
    if concept is None:
        return []
    return [t for t in [concept.text, *(c.display for c in (concept.coding or []))] if t]


#: a result dated before this is a data error (e.g. 0001-01-01 for "unknown"), not a very old result
EARLIEST_RESULT = dt.date(1900, 1, 1)


def _rtype(resource: Any) -> str:
    return resource.get_resource_type()


def _ref(resource: Any) -> str:
    return f"{_rtype(resource)}/{resource.id}" if resource.id else f"{_rtype(resource)}/(no id)"


#: why a resource whose subject is not the patient was set aside (no other patient's id is ever named)
NOT_MINE = {fhir_refs.OTHER: "refers to a different patient",
            fhir_refs.UNRESOLVED: "has a subject reference that does not resolve to this patient"}


def _change_text(change: dict[str, Any]) -> str:
    """The measured change between two scans, in words (BMD first when both scans have it)."""
    parts = []
    if "bmd_drop" in change:
        parts.append(f"BMD {change['bmd_from']:.3f} to {change['bmd_to']:.3f} g/cm2 "
                     f"({-change['bmd_drop_pct']:+.1f} %)")
    if "t_drop" in change:
        parts.append(f"T-score {change['t_from']:.1f} to {change['t_to']:.1f}")
    return "; ".join(parts) or "no comparable measure"


def _reported(scan: dict[str, Any], kind: str) -> float | None:
    return reported_precision(kind, scan[kind]) if kind in scan else None


def _dose_mg(mr: Any) -> float | None:
    """The first dose of the order in mg (``doseQuantity`` with UCUM code or unit "mg"), if it says one:
    an order-time card cites the label of the dose being ordered (zoledronic acid 4 mg is Zometa's)."""
    for dosage in mr.dosageInstruction or []:
        for rate in dosage.doseAndRate or []:
            quantity = rate.doseQuantity
            if quantity is not None and quantity.value is not None and "mg" in (quantity.code, quantity.unit):
                return float(quantity.value)
    return None


class _Builder:
    def __init__(self, valuesets: dict[str, Any], ctx: Context):
        self.vs = valuesets
        self.ctx = ctx
        self.today = ctx.now.date()
        self.out = FactSet()
        self.lab_by_code = {
            code: name for name, spec in valuesets.get("labs", {}).items() for code in spec["loinc"]
        }
        self.dxa_by_code: dict[str, tuple[str, str]] = {}
        for site, spec in valuesets.get("dxa", {}).items():
            for kind in ("t_score", "z_score", "bmd"):
                for code in spec.get(kind, []):
                    self.dxa_by_code[code] = (site, kind)
        self.systems = valuesets.get("systems", {})
        self.latest_lab: dict[str, dict[str, Any]] = {}
        self.lab_days: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # analyte -> date -> fact
        self.scans: dict[str, dict[dt.date, dict[str, Any]]] = defaultdict(dict)
        self.site_titles: dict[str, tuple[str, str]] = {}
        self.not_counted: dict[str, tuple[dt.date, str, str, str]] = {}
        self.medications: dict[str, Any] = {}
        self.refs = ctx.references or fhir_refs.EMPTY
        self.selections = {self.refs.key(s) or s for s in ctx.selections}
        self.sex = "unknown"

    def not_mine(self, resource: Any) -> str | None:
        """Why ``resource`` is not this patient's (None when it is, or says nothing about whose it is)."""
        verdict = fhir_refs.patient_verdict(fhir_refs.subject_reference(resource), self.ctx.patient_id,
                                            self.refs)
        return NOT_MINE.get(verdict)

    def problem(self, reason: str, *, ref: str | None = None, analyte: str | None = None,
                date: dt.date | None = None, kind: str = "data", about: str | None = None) -> None:
        self.out.facts.append({"t": "problem", "kind": kind, "reason": reason, "ref": ref, "analyte": analyte,
                               "about": about or analyte,
                               "age_days": (self.today - date).days if date else None})

    # -- patient -------------------------------------------------------------------------------------------
    def patient(self, patients: list[Any]) -> None:
        mine = [p for p in patients if self.ctx.patient_id in (None, p.id)] or patients[:1]
        fact: dict[str, Any] = {"t": "patient", "sex": "unknown"}
        if mine:
            p = mine[0]
            fact["sex"] = p.gender or "unknown"
            self.sex = fact["sex"]
            died = to_date(p.deceasedDateTime)
            if p.deceasedBoolean or p.deceasedDateTime is not None:
                fact["deceased"] = True
                if died:
                    fact["deceased_date"] = died.isoformat()
            born = to_date(p.birthDate)
            # age is never counted past the date of death; deceased on an unknown date: age unknown
            until = min(self.today, died) if died else None if fact.get("deceased") else self.today
            if born and until:
                fact["age"] = until.year - born.year - ((until.month, until.day) < (born.month, born.day))
        self.out.facts.append(fact)

    # -- observations ----------------------------------------------------------------------------------------
    def observation(self, obs: Any) -> None:
        ref = _ref(obs)
        codes = [code for system, code in _codings(obs.code) if system in ("", self.systems.get("loinc"))]
        analyte = next((self.lab_by_code[c] for c in codes if c in self.lab_by_code), None)
        dxa = next((self.dxa_by_code[c] for c in codes if c in self.dxa_by_code), None)
        if analyte is None and dxa is None:
            self.out.ignored["observation not used by the rules"] += 1
            return
        what = self.vs["labs"][analyte]["title"] if analyte else f"DXA {MEASURE[dxa[1]]}" if dxa else "DXA"
        about = analyte or "dxa"
        if obs.status not in COUNTED_STATUSES:
            self.out.ignored[f"observation with status {obs.status}"] += 1
            self._not_counted(obs, ref, about, what)
            return
        why = self.not_mine(obs)
        if why:
            self.problem(f"{what} result ({ref}) {why} and was ignored", ref=ref, analyte=analyte,
                         about=about)
            return
        when = observed_date(obs)
        if when is None:
            self.problem(f"{what} result ({ref}) has no date and was not used", ref=ref, analyte=analyte,
                         about=about)
            return
        if when < EARLIEST_RESULT:
            self.problem(f"{what} result ({ref}) is dated {when}, before {EARLIEST_RESULT.year}, and was "
                         "not used", ref=ref, analyte=analyte, date=None, about=about)
            return
        if when > self.today + dt.timedelta(days=1):
            self.problem(f"{what} result ({ref}) is dated {when}, in the future, and was not used", ref=ref,
                         analyte=analyte, date=None, about=about)
            return
        reading = read_value(obs, self.vs.get("unit_text_aliases") or {})
        if reading.why:
            self.problem(f"{what} result ({ref}, {when}) {reading.why} and was not used", ref=ref,
                         analyte=analyte, date=when, about=about)
            return
        if analyte:
            self._lab(analyte, reading, when, ref)
        elif dxa is not None:
            self._dxa(dxa[0], dxa[1], reading, when, ref, obs)

    def _not_counted(self, obs: Any, ref: str, about: str, what: str) -> None:
        """Remember the newest result not counted for its status (said on the monitoring cards)."""
        when = observed_date(obs)
        if when is None or self.not_mine(obs):
            return
        newest = self.not_counted.get(about)
        if newest is None or (when, ref) > (newest[0], newest[1]):
            self.not_counted[about] = (when, ref, str(obs.status), what)

    def status_notes(self) -> None:
        """A note for each analyte (and DXA) whose newest result has a status that is not counted."""
        for about, (when, ref, status, what) in sorted(self.not_counted.items()):
            if about == "dxa":
                usable = [d for by_date in self.scans.values() for d in by_date]
            else:
                usable = [dt.date.fromisoformat(self.latest_lab[about]["date"])] if about in self.latest_lab \
                    else []
            if usable and max(usable) >= when:
                continue
            self.problem(f"The latest {what} result ({ref}, {when}) has status {status} and was not counted",
                         ref=ref, analyte=None if about == "dxa" else about, date=when, kind="status",
                         about=about)

    def _lab(self, analyte: str, reading: Reading, when: dt.date, ref: str) -> None:
        spec = self.vs["labs"][analyte]
        assert reading.number is not None  # observation() sets aside a reading without a number
        canonical, why = to_canonical(reading.number, reading.unit, spec)
        if canonical is None:
            shown = f"{reading.comparator}{reading.number_text} {reading.unit_text or '(no unit)'}"
            self.problem(f"{spec['title']} {shown} on {when} ({ref}): {why}", ref=ref, analyte=analyte,
                         date=when, about=analyte)
            return
        fact = {"t": "lab", "analyte": analyte, "value": round(canonical, 4), "unit": spec["canonical_unit"],
                "reported": reading.reported,
                "shown": shown_value(canonical, reading, spec["canonical_unit"]), "date": when.isoformat(),
                "age_days": (self.today - when).days, "ref": ref}
        if reading.comparator:  # a limit, not a value: the true value is below ("<", "<=") or above it
            fact["comparator"] = reading.comparator
        self.out.series.append({"kind": "lab", "analyte": analyte, "value": fact["value"],
                                "unit": fact["unit"], "reported": fact["reported"],
                                "comparator": reading.comparator or None, "date": fact["date"]})
        best = self.latest_lab.get(analyte)
        if best is None or (fact["date"], ref) > (best["date"], best["ref"]):
            self.latest_lab[analyte] = fact
        same_day = self.lab_days[analyte].get(fact["date"])
        if same_day is None or ref > same_day["ref"]:
            self.lab_days[analyte][fact["date"]] = fact

    def _dxa(self, site: str, kind: str, reading: Reading, when: dt.date, ref: str, obs: Any) -> None:
        label = MEASURE[kind]
        title = self.vs["dxa"][site]["title"]
        if reading.comparator:
            self.problem(f"DXA {label} at the {title} on {when} ({ref}) is reported as {reading.reported!r}, "
                         "not as one value, and was set aside", ref=ref, date=when, about="dxa")
            return
        why = dxa_unit_problem(kind, reading, self.vs)
        if why:
            self.problem(f"DXA {label} at the {title} on {when} ({ref}) has unit {reading.unit_text!r}, "
                         f"{why}", ref=ref, date=when, about="dxa")
            return
        value = reading.number
        assert value is not None  # observation() sets aside a reading without a number
        if not (0.05 <= value <= 3 if kind == "bmd" else -10 <= value <= 10):
            self.problem(f"DXA {label} {value:g} at the {title} on {when} ({ref}) is outside any plausible "
                         "range", ref=ref, date=when, about="dxa")
            return
        key, title = dxa_site(site, obs, self.vs)
        self.site_titles[key] = (site, title)
        self.out.series.append({"kind": "dxa", "site": key, "site_title": title, "measure": kind,
                                "value": value, "unit": reading.unit_text or reading.unit,
                                "comparator": None, "date": when.isoformat()})
        scan = self.scans[key].setdefault(when, {"refs": []})
        scan[kind] = value  # as measured; the facts carry it at reporting precision
        scan["refs"].append(ref)

    def dxa_facts(self) -> None:
        for key, by_date in self.scans.items():
            site, title = self.site_titles[key]
            dates = sorted(by_date)
            latest = by_date[dates[-1]]
            self.out.facts.append(
                {
                    "t": "dxa",
                    "site": site,
                    "site_key": key,
                    "site_title": title,
                    "date": dates[-1].isoformat(),
                    "age_days": (self.today - dates[-1]).days,
                    "t_score": _reported(latest, "t_score"),
                    "z_score": _reported(latest, "z_score"),
                    "bmd": _reported(latest, "bmd"),
                    "refs": ",".join(latest["refs"]),
                }
            )
            if len(dates) < 2:
                continue
            before = by_date[dates[-2]]
            change: dict[str, Any] = {"t": "dxa_change", "site": site, "site_key": key, "site_title": title,
                                      "from_date": dates[-2].isoformat(), "to_date": dates[-1].isoformat(),
                                      "refs": ",".join(before["refs"] + latest["refs"])}
            # the change is measured on the values as sent (a least significant change is a property of the
            # measurement, not of its rounding); the values quoted are at reporting precision
            if "t_score" in before and "t_score" in latest:
                change.update(t_from=_reported(before, "t_score"), t_to=_reported(latest, "t_score"),
                              t_drop=round(before["t_score"] - latest["t_score"], 4))
            if "bmd" in before and "bmd" in latest and before["bmd"] > 0:
                drop = before["bmd"] - latest["bmd"]
                change.update(bmd_from=_reported(before, "bmd"), bmd_to=_reported(latest, "bmd"),
                              bmd_drop=round(drop, 4), bmd_drop_pct=round(100 * drop / before["bmd"], 3))
            change["change_text"] = _change_text(change)
            self.out.facts.append(change)

    # -- medications and orders ----------------------------------------------------------------------------
    def medication_request(self, mr: Any, *, draft: bool) -> None:
        ref = _ref(mr)
        why = self.not_mine(mr)
        if why:
            self.problem(f"A medication order ({ref}) {why} and was ignored", ref=ref)
            return
        codings = list(_codings(mr.medicationCodeableConcept))
        texts = _texts(mr.medicationCodeableConcept)
        med_ref = mr.medicationReference.reference if mr.medicationReference else None
        via = ""
        if med_ref:
            target = self.refs.resolve(med_ref)
            contained = next((c for c in (mr.contained or []) if target and target.contained
                              and c.id == target.id), None)
            med = contained or self.medications.get((target.key if target else None) or med_ref)
            if med is not None and getattr(med, "code", None) is not None:
                via = " (contained Medication)" if contained is not None else f" ({med_ref})"
                codings += _codings(med.code)
                texts += _texts(med.code)
            if mr.medicationReference.display:
                texts.append(mr.medicationReference.display)
            if med is None and not texts:
                self.problem(f"A medication order ({ref}) refers to {med_ref}, which was not supplied, so "
                             "its drug could not be identified", ref=ref)
        selected = ref in self.selections
        extra = self._order_time(mr, draft=draft, selected=selected)
        for drug_class, ingredient, how, code in classify_medication(codings, " | ".join(texts), self.vs,
                                                                         sex=self.sex):
            fact = {"t": "medication", "ref": ref, "drug_class": drug_class, "ingredient": ingredient,
                    "status": mr.status or "unknown", "draft": draft, "selected": selected,
                    "matched_by": how + via, "code": code, **extra}
            if how.startswith("text:"):  # a name in the text, no code: said so in the evidence
                fact.update(matched_by="ingredient name in text", matched_name=how[len("text:"):])
            self.out.facts.append(fact)
            if draft:
                self.out.facts.append({"t": "order", "kind": drug_class, "ref": ref})

    def _order_time(self, mr: Any, *, draft: bool, selected: bool) -> dict[str, Any]:
        """When the order started (``started``, ``started_days``: its authoredOn; ``order_start``: the earlier
        of that and ``dispenseRequest.validityPeriod.start``), and ``focus``: a draft this hook call is about
        (every draft on order-sign; the selected ones on order-select)."""
        out: dict[str, Any] = {"focus": draft and (selected or not self.ctx.selections)}
        dose = _dose_mg(mr)
        if dose is not None:
            out["dose_mg"] = dose
        start = lab_context.started(mr.authoredOn)
        if start is not None and start <= self.today:
            out.update(started=start.isoformat(), started_days=(self.today - start).days)
        validity = mr.dispenseRequest.validityPeriod if mr.dispenseRequest else None
        begins = [d for d in (start, lab_context.started(validity.start if validity else None))
                  if d is not None and d <= self.today]
        if begins:
            out["order_start"] = min(begins).isoformat()
        return out

    def service_request(self, sr: Any) -> None:
        codes = set(_codings(sr.code))
        for kind, spec in self.vs.get("orders", {}).items():
            for system_key, wanted in spec.items():
                system = self.systems.get(system_key)
                if any(s == system and c in wanted for s, c in codes):
                    self.out.facts.append({"t": "order", "kind": kind, "ref": _ref(sr)})
                    break


def build_facts(resources: Iterable[Any], drafts: Iterable[Any], ctx: Context,
                valuesets: dict[str, Any], thresholds: dict[str, float] | None = None) -> FactSet:
    """Turn parsed FHIR models (the record, and the draft orders) into facts for the rules engine.
    ``thresholds`` (name -> value, after site overrides) set the lab corrections (``lab_context``)."""
    b = _Builder(valuesets, ctx)
    resources, drafts = list(resources), list(drafts)
    b.medications = {_ref(r): r for r in resources + drafts if _rtype(r) == "Medication"}
    b.patient([r for r in resources if _rtype(r) == "Patient"])
    draft_keys = {_ref(d) for d in drafts}
    for r in resources:
        if _rtype(r) == "Observation":
            b.observation(r)
        elif _rtype(r) == "MedicationRequest" and _ref(r) not in draft_keys:
            b.medication_request(r, draft=False)
    for d in drafts:
        if _rtype(d) == "MedicationRequest":
            b.medication_request(d, draft=True)
        elif _rtype(d) == "ServiceRequest":
            b.service_request(d)
    lab_context.apply(b.latest_lab, b.lab_days, b.out.facts, valuesets.get("labs", {}), thresholds or {})
    lab_context.course_start([f for f in b.out.facts if f["t"] == "medication"], b.latest_lab,
                             valuesets.get("labs", {}), b.today)
    b.out.facts.extend(b.latest_lab.values())
    b.dxa_facts()
    b.status_notes()
    b.out.series.sort(key=lambda p: (p["date"], p["kind"], p.get("analyte") or p.get("site") or ""))
    return b.out

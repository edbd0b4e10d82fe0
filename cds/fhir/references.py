"""FHIR references resolved the way the specification says, in one place. Pure code, on JSON or models.

Every reference the service reads (``Observation.subject``, ``MedicationRequest.subject``,
``medicationReference``, ``selections``) goes through here. The forms that occur in practice:

    Patient/123                      relative (optionally ``/_history/2``)
    http://ehr.example/fhir/Patient/123   absolute: the type and id are the last two segments
    urn:uuid:9f3c...                 a Bundle entry's ``fullUrl`` (Synthea, transaction and exported bundles)
    #med1                            a resource contained in the referring resource

A ``urn:uuid`` reference resolves to the entry with that ``fullUrl`` in any Bundle of the call (prefetch
and draft orders). When no Bundle of the call has it (an EHR that sent the search results but not the
Patient entry they point at), the uuid is taken as the logical id: Synthea and most exporters write
``fullUrl = urn:uuid:<id>``, and a uuid names one resource only.

``patient_verdict`` says whether a subject is the patient of the call: ``MINE``; ``OTHER`` (another
patient, or a subject that is not a patient at all); or ``UNRESOLVED`` (a ``urn:uuid`` or contained
reference that leads nowhere, or text that is no reference). The caller uses only ``MINE`` (and resources
with no subject reference, which came in the patient's record) and sets the rest aside with a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MINE, OTHER, UNRESOLVED = "mine", "other", "unresolved"

_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_URN = ("urn:uuid:", "urn:oid:")


@dataclass(frozen=True)
class Target:
    """What a reference points at: a resource type and logical id, as far as the reference says."""

    type: str | None
    id: str | None
    contained: bool = False

    @property
    def key(self) -> str | None:
        """``Type/id`` when both are known (the form ``facts`` keys resources by)."""
        return f"{self.type}/{self.id}" if self.type and self.id and not self.contained else None


def parse(reference: Any) -> Target | None:
    """The type and id a reference names by its own text (no Bundle lookup); None when it names none."""
    if not isinstance(reference, str) or not reference.strip():
        return None
    text = reference.strip()
    if text.startswith("#"):
        return Target(None, text[1:] or None, contained=True)
    if text.startswith(_URN):
        return Target(None, text.split(":", 2)[2] or None)
    parts = [p for p in text.split("?", 1)[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and _TYPE.fullmatch(parts[-2]):
        return Target(parts[-2], parts[-1])
    if len(parts) == 1 and "://" not in text:
        return Target(None, parts[0])  # a bare id, as some clients send
    return None


@dataclass
class ReferenceIndex:
    """The ``fullUrl`` of every Bundle entry of a call, to the type and id of the resource it holds."""

    by_url: dict[str, Target] = field(default_factory=dict)

    @classmethod
    def of(cls, documents: Iterable[Any]) -> ReferenceIndex:
        index = cls()
        for document in documents:
            index.add(document)
        return index

    def add(self, document: Any) -> None:
        """Index a Bundle's entries (a lone resource has no fullUrl; anything malformed is skipped)."""
        if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
            return
        entries = document.get("entry")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            url, resource = entry.get("fullUrl"), entry.get("resource")
            if not isinstance(url, str) or not isinstance(resource, dict):
                continue
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(rtype, str):
                self.by_url[url] = Target(rtype, rid if isinstance(rid, str) else None)

    def resolve(self, reference: Any) -> Target | None:
        """The target of ``reference``: a Bundle entry's when its fullUrl matches, else what the text says."""
        if isinstance(reference, str) and reference.strip() in self.by_url:
            return self.by_url[reference.strip()]
        target = parse(reference)
        if target is not None and target.type and target.id:
            # an absolute reference to a resource sent with a relative fullUrl (or the reverse) is the same
            found = self.by_url.get(f"{target.type}/{target.id}")
            return found or target
        return target

    def key(self, reference: Any) -> str | None:
        """``Type/id`` for ``reference`` when it can be resolved that far, else None."""
        target = self.resolve(reference)
        return target.key if target else None


EMPTY = ReferenceIndex()


def patient_verdict(reference: Any, patient_id: str | None, index: ReferenceIndex | None = None) -> str:
    """Whether ``reference`` (a subject's ``reference`` text) is the patient ``patient_id``."""
    if patient_id is None or reference is None:
        return MINE  # no patient to compare with, or no subject reference: the record is the patient's
    target = (index or EMPTY).resolve(reference)
    if target is None or target.contained or target.id is None:
        return UNRESOLVED
    if target.type not in (None, "Patient"):
        return OTHER  # a Group, Device, Location...: not this patient
    if target.id == patient_id:
        return MINE
    if target.type is None and str(reference).strip().startswith(_URN):
        return UNRESOLVED  # a uuid that is neither this patient's id nor any entry's fullUrl
    return OTHER


def subject_reference(resource: Any) -> str | None:
    """The ``subject`` (or ``patient``) reference text of a model or a JSON resource, if any."""
    for name in ("subject", "patient"):
        value = resource.get(name) if isinstance(resource, dict) else getattr(resource, name, None)
        if value is None:
            continue
        text = value.get("reference") if isinstance(value, dict) else getattr(value, "reference", None)
        if isinstance(text, str) and text.strip():
            return text
        return None  # a subject given by identifier or display only says nothing resolvable
    return None

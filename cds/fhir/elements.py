"""FHIR R4 only: every element name in what the service reads is one that R4 defines. Pure code.

The R4B models refuse an element they do not define wherever they validate (pydantic ``extra="forbid"``:
a contained ``Medication.doseForm``, R5's name for ``form``, is refused that way). But the service validates
only the elements its rules read (``cds.fhir.parse.READ_ELEMENTS``), and chooses the resources worth
validating before validating them (``cds.fhir.relevance``). An element the rules would read under another
release's name (R5's ``MedicationRequest.medication`` for R4's ``medicationCodeableConcept``) would then be
dropped without a word, and the patient's drug with it. So the names at the top of every resource of a
type the service reads, and of the Bundles and entries that carry them, are checked against the R4 model
first, whether the resource is relevant or not: an unknown name is ``InvalidFhir`` (400) naming its path.
One look-up per name: linear in the size of the resource. ``describe`` words a model's own refusal the same
way, with the path of an unknown element found deeper.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import ValidationError

from cds.errors import InvalidFhir

#: longest part of an unknown name quoted back (a name is client text of any length)
MAX_NAME_SHOWN = 60


@functools.cache
def r4_names(model: Any) -> frozenset[str]:
    """The JSON names of an R4B model's elements (``_birthDate`` for a primitive's extensions included)."""
    names = {field.alias or name for name, field in model.model_fields.items()}
    return frozenset(names - {"fhir_comments"}) | {"resourceType"}


def _shown(name: str) -> str:
    return name if len(name) <= MAX_NAME_SHOWN else name[: MAX_NAME_SHOWN - 1] + "…"


def check_names(data: dict[str, Any], model: Any, *, where: str, what: str) -> None:
    """Raise ``InvalidFhir`` naming ``where.<name>`` for each name of ``data`` that ``model`` (the R4B model
    of ``what``) does not define; nothing when every name is R4's."""
    known = r4_names(model)
    unknown = [_shown(str(name)) for name in data if name not in known]
    if not unknown:
        return
    paths = [f"{where}.{name}" for name in unknown]
    raise InvalidFhir(f"{paths[0]}: {unknown[0]!r} is not an element of FHIR R4 {what} (this service reads "
                      "FHIR R4 only; an element of another FHIR release is refused, never ignored)",
                      field=paths[0], details=[f"{p}: not an element of FHIR R4 {what}" for p in paths[1:]],
                      detail_fields=list[str | None](paths[1:]))


def _path(loc: tuple[Any, ...]) -> str:
    """A pydantic location as a path: ``contained[0].doseForm``."""
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "__root__"]
    return "".join(parts).removeprefix(".")


def describe(exc: ValidationError, where: str) -> tuple[str, str]:
    """What the first error of an R4B model says, and where it is: the element's own path when it is one the
    model does not define (an unknown element inside a validated one, or in a contained resource)."""
    first = exc.errors()[0]
    loc = _path(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden" and loc:
        return f"{loc}: not an element of FHIR R4 (this service reads FHIR R4 only)", f"{where}.{loc}"
    return f"{loc or '(resource)'}: {first.get('msg', 'invalid')}", where

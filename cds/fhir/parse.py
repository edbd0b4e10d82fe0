"""FHIR R4 parsing: the only module that imports fhir.resources (its ``R4B`` package; EHRs speak R4).

Only the resource types the rules use are validated; everything else in a Bundle is counted and skipped.
A resource that fails validation raises ``InvalidFhir`` naming where it is and which field is wrong. Every
element name of a resource of a used type, and of the Bundles and entries around it, is checked as one R4
defines before anything else (``cds.fhir.elements``): an element of another release is refused, never
dropped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from pydantic import ValidationError

from cds.errors import InvalidFhir
from cds.fhir import units
from cds.fhir.cache import LRU
from cds.fhir.digest import digest_sized
from cds.fhir.elements import check_names, describe
from cds.settings import default as setting_default

#: resourceType -> module name in fhir.resources.R4B
USED_TYPES = {
    "Patient": "patient",
    "Observation": "observation",
    "MedicationRequest": "medicationrequest",
    "Medication": "medication",
    "ServiceRequest": "servicerequest",
}

_MODELS: dict[str, Any] = {}


def is_used_type(resource_type: Any) -> bool:
    """Whether ``resource_type`` (any JSON value) names a type the rules read."""
    return isinstance(resource_type, str) and resource_type in USED_TYPES


def model_for(resource_type: str) -> Any:
    if resource_type not in _MODELS:
        module = importlib.import_module(f"fhir.resources.R4B.{USED_TYPES[resource_type]}")
        _MODELS[resource_type] = getattr(module, resource_type)
    return _MODELS[resource_type]


def warm_up() -> None:
    """Import every model and validate one tiny instance so the first request pays nothing extra."""
    for resource_type in USED_TYPES:
        model_for(resource_type)
    units.warm_up()
    parse_resource({"resourceType": "Patient", "id": "warm-up"}, where="warm-up")


class ModelCache(LRU[tuple[str, str, str, bytes], Any]):
    """Validated models by (type, id, versionId, content): a warm patient's resources are not validated again.

    order-select fires again and again for the same patient before order-sign; each time the same
    resources arrive. The key includes a digest of the exact JSON text of the resource, so changed content
    is a miss (never a stale hit). Bounded in entries and in bytes (``cds.fhir.cache``: each entry sized by
    the JSON text it was made from), least recently used out first, per process, thread-safe.
    """

    def __init__(self, max_entries: int, max_bytes: int = 64 << 20):
        super().__init__(max_entries, max_bytes)

    @staticmethod
    def key(data: dict[str, Any]) -> tuple[tuple[str, str, str, bytes], int] | None:
        """The cache key of a resource and the size of its entry, or None when it has no key."""
        rid = data.get("id")
        if not isinstance(rid, str):
            return None
        meta = data.get("meta")
        version = meta.get("versionId") if isinstance(meta, dict) else None
        found = digest_sized(data)
        if found is None:
            return None
        return (str(data.get("resourceType")), rid, str(version), found[0]), found[1]


#: The elements of each type that the facts and cards read. Only these are validated and kept: an element
#: no rule reads cannot change any advice, so a resource is not refused for it, and validating it would be
#: most of the cost of a call (real EHR resources carry narrative, reference ranges, performers, notes...).
READ_ELEMENTS: dict[str, frozenset[str]] = {
    "Patient": frozenset({"id", "meta", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime"}),
    "Observation": frozenset({"id", "meta", "status", "code", "subject", "effectiveDateTime",
                              "effectivePeriod", "effectiveInstant", "issued", "valueQuantity",
                              "valueString", "dataAbsentReason", "bodySite"}),
    "MedicationRequest": frozenset({"id", "meta", "status", "intent", "subject", "medicationCodeableConcept",
                                    "medicationReference", "contained", "dosageInstruction", "authoredOn",
                                    "dispenseRequest"}),
    "Medication": frozenset({"id", "meta", "code"}),
    "ServiceRequest": frozenset({"id", "meta", "status", "intent", "subject", "code"}),
}


#: Elements read only to refine advice (when a therapy started: authoredOn, the dispense validity period): a
#: malformed one is treated as absent, never a refusal of the call. The CDS Hooks sandbox's drafts carry
#: such dates; the start is then unknown.
LENIENT_ELEMENTS: dict[str, frozenset[str]] = {
    "MedicationRequest": frozenset({"authoredOn", "dispenseRequest"})}


def _without_lenient(part: dict[str, Any], exc: ValidationError) -> dict[str, Any] | None:
    """``part`` without the lenient elements ``exc`` found malformed, or None when anything else is."""
    bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
    lenient = LENIENT_ELEMENTS.get(str(part.get("resourceType")), frozenset())
    if not bad or not bad <= lenient or len(bad) != len(exc.errors()):
        return None
    return {k: v for k, v in part.items() if k not in bad}


def read_part(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a resource the rules read (see ``READ_ELEMENTS``)."""
    keep = READ_ELEMENTS[data["resourceType"]]
    return {k: v for k, v in data.items() if k in keep or k == "resourceType"}


def _check_decimals(part: dict[str, Any], where: str) -> None:
    """A FHIR decimal is a JSON number. The models would coerce a string such as ``"-0"`` or ``"5"`` into
    a number; a lab value sent as a string is malformed, and must never be read as a result."""
    quantity = part.get("valueQuantity")
    if isinstance(quantity, dict) and "value" in quantity:
        value = quantity["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            field = f"{where}.valueQuantity.value"
            raise InvalidFhir(f"{field}: a FHIR decimal is a JSON number, got {type(value).__name__} "
                              f"{str(value)[:40]!r}", field=field)


#: Single (not repeating) complex elements whose JSON recurs across resources: the same LOINC code on
#: every patient's estradiol, the same drug coding, the same meta, the same subject on each resource of
#: one patient. Each distinct one is validated once (by its own R4B model, as the resource's model would)
#: and the validated element is handed to the resource's model, which accepts it as it is; the rest of the
#: resource is validated as before. An element that fails on its own is left in place, so the resource's
#: model reports it in the same words as ever. Per process, bounded in entries and in bytes (keyed by the
#: digest of the element's JSON text, sized by that text), least recently used out first.
_CONCEPT = "codeableconcept.CodeableConcept"
SHARED_ELEMENTS = {"code": _CONCEPT, "bodySite": _CONCEPT, "dataAbsentReason": _CONCEPT, "meta": "meta.Meta",
                   "medicationCodeableConcept": _CONCEPT, "subject": "reference.Reference"}
ELEMENT_CACHE_ENTRIES = 4096
ELEMENT_CACHE_BYTES = 16 << 20  # set from CDS_CACHE_MAX_BYTES when the app is built
_ELEMENTS: LRU[tuple[str, bytes], Any] = LRU()


def r4_class(path: str) -> Any:
    """An R4B model class by ``module.Class`` (``bundle.BundleEntry``)."""
    module, _, klass = path.partition(".")
    return getattr(importlib.import_module(f"fhir.resources.R4B.{module}"), klass)


def _check_r4(data: dict[str, Any], resource_type: str, where: str) -> None:
    model = r4_class(f"{USED_TYPES[resource_type]}.{resource_type}")
    check_names(data, model, where=where, what=resource_type)


def _element_class(name: str) -> Any:
    return r4_class(SHARED_ELEMENTS[name])


def _shared_element(name: str, value: Any) -> Any:
    """The validated model of element ``name`` (a JSON object), from the cache or validated now; None when
    it is not an object, has no exact JSON text, or does not validate on its own."""
    if not isinstance(value, dict):
        return None
    found = digest_sized(value)
    if found is None:
        return None
    key = (SHARED_ELEMENTS[name], found[0])
    model = _ELEMENTS.get(key)
    if model is not None:
        return model
    try:
        model = _element_class(name).model_validate(value)
    except (ValidationError, TypeError, ValueError):
        return None
    _ELEMENTS.put(key, model, found[1], max_entries=ELEMENT_CACHE_ENTRIES, max_bytes=ELEMENT_CACHE_BYTES)
    return model


def _with_shared_elements(part: dict[str, Any]) -> dict[str, Any]:
    for name in SHARED_ELEMENTS.keys() & part.keys():
        model = _shared_element(name, part[name])
        if model is not None:
            part[name] = model
    return part


def parse_resource(data: Any, *, where: str, cache: ModelCache | None = None) -> Any:
    """Validate the elements the rules read of one resource of a used type; return the R4B model."""
    if not isinstance(data, dict):
        raise InvalidFhir(f"{where}: expected a FHIR resource (JSON object), got {type(data).__name__}",
                          field=where)
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in USED_TYPES:
        raise InvalidFhir(
            f"{where}: resourceType {resource_type!r} is not one this service reads", field=where
        )
    _check_r4(data, resource_type, where)
    part = read_part(data)
    _check_decimals(part, where)
    keyed = cache.key(part) if cache is not None and cache.max_entries > 0 else None
    if keyed is not None and cache is not None:
        model = cache.get(keyed[0])
        if model is not None:
            return model
    try:
        try:
            model = model_for(resource_type).model_validate(_with_shared_elements(part))
        except ValidationError as exc:
            kept = _without_lenient(part, exc)
            if kept is None:
                raise
            model = model_for(resource_type).model_validate(_with_shared_elements(kept))
    except ValidationError as exc:
        said, field = describe(exc, where)
        raise InvalidFhir(f"{where}: invalid FHIR {resource_type}: {said}", field=field) from exc
    except (TypeError, ValueError) as exc:  # fhir.resources raises these for some malformed primitives
        raise InvalidFhir(f"{where}: invalid FHIR {resource_type}: {exc}", field=where) from exc
    if keyed is not None and cache is not None:
        cache.put(keyed[0], model, keyed[1])
    return model


def validates_fully(data: Any) -> bool:
    """Whether ``data`` is, as a whole (not only the elements the rules read), a valid R4 resource."""
    if not isinstance(data, dict) or not is_used_type(data.get("resourceType")):
        return False
    try:
        model_for(data["resourceType"]).model_validate(data)
    except (ValidationError, TypeError, ValueError):
        return False
    return True


def iter_resources(data: Any, *, where: str, max_entries: int | None = None) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, resource_dict)`` for each resource in a Bundle, or the resource itself.

    The Bundle's own shape is checked here (cheaply); the entries are validated by ``parse_resource``.
    """
    if data is None:
        return
    if not isinstance(data, dict):
        raise InvalidFhir(
            f"{where}: expected a FHIR Bundle or resource, got {type(data).__name__}", field=where
        )
    if data.get("resourceType") != "Bundle":
        yield where, data
        return
    check_names(data, r4_class("bundle.Bundle"), where=where, what="Bundle")
    links = data.get("link")
    for index, link in enumerate(links if isinstance(links, list) else []):
        if isinstance(link, dict):
            check_names(link, r4_class("bundle.BundleLink"), where=f"{where}.link[{index}]",
                        what="Bundle.link")
    entries = data.get("entry", [])
    if entries is None:
        return
    if not isinstance(entries, list):
        raise InvalidFhir(f"{where}.entry: expected a list", field=f"{where}.entry")
    if max_entries is not None and len(entries) > max_entries:
        from cds.errors import LimitExceeded

        raise LimitExceeded(f"{where}: {len(entries)} Bundle entries, more than the limit of {max_entries}",
                            field=f"{where}.entry")
    for index, entry in enumerate(entries):
        here = f"{where}.entry[{index}]"
        if not isinstance(entry, dict):
            raise InvalidFhir(f"{here}: expected a Bundle entry object", field=here)
        check_names(entry, r4_class("bundle.BundleEntry"), where=here, what="Bundle.entry")
        resource = entry.get("resource")
        if resource is None:
            continue
        yield f"{here}.resource", resource


def used_resources(data: Any, *, where: str, max_entries: int | None = None) -> Iterator[tuple[str, Any]]:
    """``iter_resources`` without the resources of types the rules never read; the element names of each one
    yielded are R4's (checked here, before any filter could set it aside unread)."""
    for here, resource in iter_resources(data, where=where, max_entries=max_entries):
        if isinstance(resource, dict):
            kind = resource.get("resourceType")
            if not isinstance(kind, str) or not is_used_type(kind):
                continue
            _check_r4(resource, kind, here)
        yield here, resource


def parse_all(data: Any, *, where: str, max_entries: int | None = None,
              relevant: Callable[[Any], bool] | None = None, cache: ModelCache | None = None) -> list[Any]:
    """Parse the used resources in a Bundle (or a single resource).

    Types the rules never read are skipped, and so is any resource ``relevant`` rejects (it is not
    validated at all: the rules could not use it).
    """
    models = []
    for here, resource in used_resources(data, where=where, max_entries=max_entries):
        if relevant is not None and not relevant(resource):
            continue
        models.append(parse_resource(resource, where=here, cache=cache))
    return models


def _pruned(value: Any) -> Any:
    """``value`` without empty objects, lists and strings (FHIR ele-1: an element has a value or children)."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in (_pruned(x) for x in value) if v not in (None, "", [], {})]
    return value


def _wrap_at(data: Any, loc: tuple[Any, ...]) -> bool:
    """Wrap the object at ``loc`` in a list (a repeating element sent as one object); whether it did."""
    parent = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(parent, dict) and isinstance(parent.get(loc[-1]), dict):
        parent[loc[-1]] = [parent[loc[-1]]]
        return True
    return False


#: outgoing resources found valid, by the digest of their exact JSON text (``digest``), each kept as the
#: JSON text of the resource as repaired. The check depends on nothing but that text, so a hit is the
#: check's own answer (a patient's cards again, the same suggestion for another call). Only results orjson
#: writes back exactly are kept (no ``null`` in the text, see cds/fhir/digest.py); a resource found invalid
#: is checked again each time. Per process, bounded in entries (``CDS_SUGGESTION_CACHE_SIZE``; 0: off) and
#: in bytes (its share of ``CDS_CACHE_MAX_BYTES``), least recently used out first.
OUTGOING_CACHE_ENTRIES = setting_default("SUGGESTION_CACHE_SIZE")
OUTGOING_CACHE_BYTES = 16 << 20
_OUTGOING: LRU[bytes, bytes] = LRU()


def outgoing_resource(data: Any, *, where: str) -> tuple[dict[str, Any] | None, str | None]:
    """A resource this service sends (a suggestion's), checked as valid R4 by the R4B model of its type.

    Sloppy drafts echoed back are repaired where the meaning is plain: empty elements (``coding: [{}]``)
    dropped, a repeating element sent as one object (``category: {...}``) wrapped in a list. Returns
    ``(resource, None)``, or ``(None, why)`` when it is not valid R4 even so: it must then not be sent.
    A resource found valid before (the same JSON text) is answered from ``_OUTGOING``, as a new copy.
    """
    keyed = digest_sized(data) if isinstance(data, dict) and OUTGOING_CACHE_ENTRIES > 0 else None
    if keyed is not None:
        good = _OUTGOING.get(keyed[0])
        if good is not None:
            return orjson.loads(good), None
    resource, why = _checked_outgoing(data, where=where)
    if keyed is not None and resource is not None:
        try:
            good = orjson.dumps(resource)
        except (orjson.JSONEncodeError, TypeError):
            good = None
        if good is not None and b"null" not in good:
            _OUTGOING.put(keyed[0], good, keyed[1] + len(good), max_entries=OUTGOING_CACHE_ENTRIES,
                          max_bytes=OUTGOING_CACHE_BYTES)
    return resource, why


def _checked_outgoing(data: Any, *, where: str) -> tuple[dict[str, Any] | None, str | None]:
    from fhir.resources.R4B import get_fhir_model_class

    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        return None, f"{where}: not a FHIR resource"
    try:
        model = get_fhir_model_class(data["resourceType"])
    except (KeyError, ValueError, AttributeError, ImportError):
        return None, f"{where}: resourceType {data['resourceType']!r} is not an R4 resource type"
    repaired = _pruned(data)
    for _ in range(20):
        try:
            model.model_validate(repaired)
            return repaired, None
        except ValidationError as exc:
            errors = exc.errors()
            fixed = [e for e in errors
                     if e.get("type") == "list_type" and _wrap_at(repaired, tuple(e["loc"]))]
            if not fixed:
                return None, f"{where}: not valid FHIR {data['resourceType']}: {describe(exc, where)[0]}"
        except (TypeError, ValueError) as exc:
            return None, f"{where}: not valid FHIR {data['resourceType']}: {exc}"
    return None, f"{where}: not valid FHIR {data['resourceType']}"


def r4_problem(data: Any, *, where: str, raw: bytes | None = None,
               cache: ModelCache | None = None) -> str | None:
    """Why ``data`` is not a valid R4 resource as a whole (by the R4B model of its type), or None when it is.
    A resource of a type the rules read must also pass the service's own check (``parse_resource``: R4
    element names only, decimals as JSON numbers), which it would otherwise refuse; its model goes to
    ``cache``. ``raw``: the exact JSON text of ``data``, validated as JSON (faster)."""
    from fhir.resources.R4B import get_fhir_model_class

    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        return f"{where}: not a FHIR resource"
    if is_used_type(data["resourceType"]):
        try:
            parse_resource(data, where=where, cache=cache)
        except InvalidFhir as exc:
            return exc.message
    try:
        model = get_fhir_model_class(data["resourceType"])
    except (KeyError, ValueError, AttributeError, ImportError):
        return f"{where}: resourceType {data['resourceType']!r} is not an R4 resource type"
    try:
        if raw is not None:
            model.model_validate_json(raw)
        else:
            model.model_validate(data)
    except ValidationError as exc:
        return f"{where}: invalid FHIR {data['resourceType']}: {describe(exc, where)[0]}"
    except (TypeError, ValueError) as exc:
        return f"{where}: invalid FHIR {data['resourceType']}: {exc}"
    return None

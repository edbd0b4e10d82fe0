"""Every parser of untrusted text runs in time linear in its input, and bounded before any library sees it.

The class: whatever reads text that comes from a request or a FHIR server — lab value strings, units (UCUM
codes and unit texts), codes, display texts matched against drug names, dates, ids, references, the JSON
body itself, the client's token, the patient id scrubbed from audit content, the text escaped into card
Markdown, a card link's token, a FHIR server's base and ``next`` links, a prefetch template's context
values. A backtracking pattern over such text froze the service (``"5"`` + 3,000 spaces + ``"x\\ny"`` as
an estradiol ``valueString``: cubic; a JSON body of escaped quotes: quadratic), and so did a unit handed to
the UCUM library with an exponent of 29,999,999.

How it is measured, robustly on a loaded machine: hypothesis builds adversarial texts as a prefix, a short
unit repeated, and a suffix (long runs of spaces, digits, signs, brackets, exponents, ``*``, ``^``, line
breaks, mixed Unicode). Each parser reads the text with the unit repeated ``SHORT`` times and then
``LONG = 16 x SHORT`` times, in CPU time of this thread (the time other processes take is not counted).
A linear parser takes about 16 times as long on the long text; the test fails when it takes more than
``MULTIPLE`` (8) times that, plus an absolute ``FLOOR``; a quadratic one takes 256 times, a cubic 4,096.
A long reading over budget is measured again before the test fails.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import PUBLIC_JWKS, TEST_ISS

from cds.auth import links
from cds.auth.trusted_clients import parse_trusted_clients
from cds.auth.verify import TokenVerifier
from cds.call.fhir_client import parse_base, plain_path
from cds.errors import CdsError
from cds.fhir import parse as fhir_parse
from cds.fhir import references, units, values
from cds.fhir.relevance import Relevance, name_in_text
from cds.hooks import envelope, tokens
from cds.rules import pack as rulepack
from cds.rules.templating import escape_text
from cds.web.jsonbody import parse_json

PACK = rulepack.load()
ALIASES = PACK.valuesets["unit_text_aliases"]
RELEVANCE = Relevance(PACK.valuesets)
ESTRADIOL = PACK.valuesets["labs"]["estradiol"]
VERIFIER = TokenVerifier(parse_trusted_clients({"clients": [{"iss": TEST_ISS, "jwks": PUBLIC_JWKS}]},
                                               where="test"), first_use=lambda *_: True)
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"

SHORT, LONG = 1024, 16384  # repeats of the unit: the long text is 16 times the short one
MULTIPLE = 8.0
FLOOR = 0.05  # CPU seconds
RATIO = LONG / SHORT

#: what the texts are made of: runs that make backtracking patterns blow up, and text that looks like data
PIECES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "0", "5", "9", ".", ",", "-", "+", "<", ">", "=",
          "<=", "≤", "≥", "*", "^", "/", "(", ")", "[", "]", "{", "}", "'", '"', "\\", "&", "#", "|",
          "_", "~",
          "`", "%", ":", "//", "?", "x", "e", "E", "T", "Z", "10*", "10^", "m", "g", "L", "pg/mL", "mcg", "µ",
          "é", "𝟙", "٣", "\u200b", "\ufeff", "Patient/", "urn:uuid:", "p1", "_history", "#med", "www.",
          "http://", "alendronic", "acid", "anastrozole", "-0", "2026-", "12:00:00", "{{", "}}", "context."]
TEXT = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)
SHAPES = st.tuples(TEXT, TEXT.filter(bool), TEXT)


def _cpu(parser: Callable[[str], Any], text: str) -> float:
    """CPU seconds of this thread for one call (garbage collection held off: its pauses depend on the
    whole test process, not on the parser)."""
    gc.disable()
    started = time.thread_time()
    try:
        parser(text)
    except CdsError:
        pass  # a clear refusal is an answer
    finally:
        took = time.thread_time() - started
        gc.enable()
    return took


def _within_budget(parser: Callable[[str], Any], shape: tuple[str, str, str]) -> tuple[bool, str]:
    prefix, unit, suffix = shape
    short, long = prefix + unit * SHORT + suffix, prefix + unit * LONG + suffix
    base = min(_cpu(parser, short) for _ in range(3))
    budget = MULTIPLE * RATIO * base + FLOOR
    took = _cpu(parser, long)
    if took > budget:
        took = min(took, _cpu(parser, long))  # measured again before failing
    return took <= budget, f"{len(long)} characters took {took:.3f} s of CPU; {len(short)}: {base:.4f} s " \
                           f"(budget {budget:.3f} s)"


# -- the parsers, each fed one text --------------------------------------------------------------------------


def _observation(**fields: Any) -> dict[str, Any]:
    resource = {"resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "2243-4"}]},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-10-01",
                "valueQuantity": {"value": 5, "unit": "pg/mL", "system": UCUM, "code": "pg/mL"}}
    resource.update(fields)
    return resource


def _read_observation(resource: dict[str, Any]) -> Any:
    """What the service does with one Observation: the relevance filter, validation, the value read."""
    if RELEVANCE(resource):
        model = fhir_parse.parse_resource(resource, where="prefetch.estradiol")
        reading = values.read(model, ALIASES)
        if reading.number is not None:
            units.to_canonical(reading.number, reading.unit, ESTRADIOL)


def _medication_request(text: str) -> None:
    resource = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                "subject": {"reference": "Patient/p1"}, "authoredOn": text,
                "medicationCodeableConcept": {"text": text, "coding": [{"display": text}]}}
    if RELEVANCE(resource):
        fhir_parse.parse_resource(resource, where="context.draftOrders")


def _hook_request(text: str) -> None:
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": text, "patientId": text}, "fhirServer": text}
    envelope.parse_hook_request(body, "patient-view")


PARSERS: dict[str, Callable[[str], Any]] = {
    "valueString": lambda t: values.read(SimpleNamespace(dataAbsentReason=None, valueQuantity=None,
                                                         valueString=t), ALIASES),
    "valueString, validated": lambda t: _read_observation(_observation(valueQuantity=None, valueString=t)),
    "valueQuantity.code": lambda t: _read_observation(_observation(
        valueQuantity={"value": 5, "unit": "x", "system": UCUM, "code": t})),
    "valueQuantity.unit": lambda t: _read_observation(_observation(valueQuantity={"value": 5, "unit": t})),
    "UCUM unit": lambda t: units.to_canonical(5.0, t, ESTRADIOL),
    "unit text": lambda t: units.from_text(t, ALIASES),
    "code and display": lambda t: _read_observation(_observation(
        code={"text": t, "coding": [{"system": LOINC, "code": "2243-4", "display": t}]},
        bodySite={"text": t})),
    "code value": lambda t: _read_observation(_observation(code={"coding": [{"system": LOINC, "code": t}]})),
    "dates": lambda t: _read_observation(_observation(effectiveDateTime=t, issued=t)),
    "ids and status": lambda t: _read_observation(_observation(id=t, status=t)),
    "subject reference": lambda t: _read_observation(_observation(subject={"reference": t})),
    "reference": references.parse,
    "reference index": lambda t: references.ReferenceIndex.of(
        [{"resourceType": "Bundle", "entry": [{"fullUrl": t, "resource": {"resourceType": "Patient"}}]}]
    ).resolve(t),
    "drug names": lambda t: name_in_text(t, RELEVANCE.names),
    "draft order": _medication_request,
    "JSON body": lambda t: parse_json(t.encode("utf-8", "surrogatepass"), max_bytes=10**8, max_depth=64),
    "JSON body, one string": lambda t: parse_json(('{"a": "' + t + '"}').encode("utf-8", "surrogatepass"),
                                                  max_bytes=10**8, max_depth=64),
    "card text": escape_text,
    "hook envelope": _hook_request,
    "prefetch token": lambda t: tokens.fill("Observation?patient={{context.patientId}}&x={{context.x}}",
                                            {"patientId": t, "x": t, "userId": t}),
    "FHIR server base and next link": lambda t: (parse_base(t), plain_path(t)),
    "card link token": lambda t: _link(t),
    "client token (Authorization header)": lambda t: VERIFIER.verify(f"Bearer {t}", "http://localhost/x"),
    "client token, dotted": lambda t: VERIFIER.verify(f"Bearer e30.{t}.{t}", "http://localhost/x"),
    "patient id in audit content": lambda t: _scrub(t),
}


def _link(text: str) -> None:
    try:
        links.verify(b"k" * 32, text)
    except links.LinkRefused:
        pass


def _scrub(text: str) -> None:
    from cds.ledger.record import scrub

    scrub({"a": [text, {"b": text}]}, "p1", "pk-x")


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    fhir_parse.warm_up()


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(shape=SHAPES)
@example(shape=("5", " ", "x\ny"))  # finding 1 of the second round
@example(shape=('"', '\\"', ""))  # escaped quotes in a string never closed
@example(shape=("<", "5", " pg/mL"))
@example(shape=("10*", "9", ""))
def test_every_parser_is_linear_in_its_input(name, shape):
    ok, said = _within_budget(PARSERS[name], shape)
    assert ok, f"{name}: {said}; shape {shape!r}"


# -- bounds checked before the UCUM library sees a unit ------------------------------------------------------

UCUM_TEXT = st.lists(st.sampled_from(["10*", "10^", "m", "g", "L", "mL", "pg", "ng", "mol", "s", "h", "[iU]",
                                      "{x}", ".", "/", "(", ")", "+", "-", "0", "1", "2", "3", "9", "99"]),
                     max_size=24).map("".join).filter(lambda t: len(t) <= units.MAX_UNIT_CHARS)


@settings(max_examples=300, deadline=None)
@given(unit=UCUM_TEXT)
@example(unit="10*29999999")  # finding 2 of the second round: 43 s under the library's lock
@example(unit="10*999999999")
@example(unit="10^-99999999")
@example(unit="m99999999.g")
@example(unit="(10*9999999)")
@example(unit="1000000000000000000000000000000.g")
def test_no_unit_within_the_length_limit_costs_the_library_more_than_a_moment(unit):
    took = _cpu(lambda t: units.to_canonical(5.0, t, ESTRADIOL), unit)
    assert took < 1.0, f"{unit!r} took {took:.2f} s of CPU"


@pytest.mark.parametrize("unit, said", [
    ("10*29999999", "exponent 29999999"), ("10^-99999999", "exponent -99999999"), ("m31", "exponent 31"),
    ("1000000000000.g", "factor 1000000000000"), ("x" * 65, "longer than 64"), ("[iU", "never closed"),
])
def test_a_unit_beyond_the_bounds_is_set_aside_saying_which(unit, said):
    value, why = units.to_canonical(5.0, unit, ESTRADIOL)
    assert value is None and said in why and "not recognised" in why


@pytest.mark.parametrize("unit", ["10*12", "10*-3", "10^9", "cm2", "m-2", "g/(24.h)", "[Btu_39]",
                                  "{T-Score}"])
def test_units_within_the_bounds_still_reach_the_library(unit):
    assert units.unit_problem(unit) == ""
    assert units.canonical(unit) is not None


# -- the same answers as before, in linear time --------------------------------------------------------------

#: the text-result pattern the service used to run (cubic on a run of spaces before a line break): the
#: reference the one-pass reader is held to, on short texts only
_FORMER = __import__("re").compile(r"^\s*(<=|>=|=<|=>|<|>|≤|≥)?\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(.*?)\s*$")


@settings(max_examples=2000, deadline=None)
@given(text=st.lists(st.sampled_from(PIECES), max_size=10).map("".join))
@example(text="< 5 pg/mL")
@example(text="14.2.3 ng/L\n")
@example(text=" \n5\n pg/mL \n")
@example(text=".5")
@example(text="5.")
def test_text_results_are_read_as_the_former_pattern_read_them(text):
    found = _FORMER.match(text)
    former = (found.group(1) or "", found.group(2), found.group(3)) if found else None
    assert values.split_text(text) == former


@pytest.mark.parametrize("text, why", [
    ("1" * 25, "longer than any result"), ("<" + "0" * 4000 + ".5 pg/mL", "longer than any result"),
    ("5" + " " * 3000 + "x\ny", "reported as text"),
])
def test_a_text_result_that_is_no_number_says_why(text, why):
    reading = PARSERS["valueString"](text)
    assert reading.number is None and why in reading.why
    assert len(reading.why) < 200  # the text itself is quoted only in part


def test_a_huge_magnitude_is_shown_in_few_characters():
    quantity = {"value": 1e300, "unit": "pg/mL", "system": UCUM, "code": "pg/mL"}
    model = fhir_parse.parse_resource(_observation(valueQuantity=quantity), where="x")
    reading = values.read(model, ALIASES)
    assert len(reading.number_text) <= values.MAX_NUMBER_CHARS
    assert units.to_canonical(reading.number, reading.unit, ESTRADIOL)[0] is None


# -- at the size limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b'{"a": "' + b'\\"' * 2_400_000 + b"}",  # escaped quotes in a string never closed: quadratic before
    b'{"a": "' + b"\\\\" * 2_400_000 + b'"}',
    b"[" * 2_000_000,
    b'{"a": ' + b"9" * 4_900_000 + b"}",
])
def test_a_body_at_the_size_limit_is_read_in_linear_time(body):
    took = _cpu(lambda raw: parse_json(raw, max_bytes=5_000_000, max_depth=64), body)  # type: ignore[arg-type]
    assert took < 5.0, f"{len(body)} bytes took {took:.2f} s of CPU"


def test_a_value_string_at_the_size_limit_is_read_in_linear_time():
    text = "5" + " " * 4_000_000 + "x\ny"
    took = _cpu(PARSERS["valueString, validated"], text)
    assert took < 5.0, f"{len(text)} characters took {took:.2f} s of CPU"


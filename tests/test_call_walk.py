"""The life of a hook call, as docs/architecture.md lists it, against one real call traced module by module.

One hook call goes through the Flask test client with the audit on (SQLite) and the token id settled with
the record; ``sys.setprofile`` sees every function entered, and a call from one ``cds`` module into another
is a hop. The test checks that

* the hops made by the modules that run the call (the web and call stages, ``RUNNERS``) are, in the order
  first made, the ones the "Life of a hook call" section lists;
* no hop goes back up the stage order of tests/test_layout.py (a lower stage calling a module of a higher
  one: the ledger calling back into the call layer, the FHIR parser into the budget's owner ...);

and that both checks fail on traces made to break them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from builders import hook_body, med, obs, patient
from sqlalchemy import text
from support import make_token, trusted_clients_file_in
from test_layout import STAGES

from cds import create_app

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
SECTION = "## Life of a hook call"
SERVICE = "/cds-services/bone-health-order-select"
RUNNERS = ("web", "call")  # the stages whose modules run the call: their hops are the walk
Hop = tuple[str, str]  # (caller module, entered module), both ``cds.*``


def stage_of(module: str) -> int:
    """The index in ``STAGES`` of the stage holding ``module`` (its longest matching prefix)."""
    best, length = -1, -1
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no stage of tests/test_layout.py")
    return best


def short(module: str) -> str:
    """``cds.web.guard`` -> ``web/guard``, as the docs name modules."""
    return module.removeprefix("cds.").replace(".", "/")


def walk_of(hops: Iterable[Hop]) -> list[str]:
    """The hops made by the runners' modules, each once, in the order first made, as ``a/b -> c/d``."""
    runners = {index for index, (name, _) in enumerate(STAGES) if name in RUNNERS}
    walk: list[str] = []
    for caller, entered in hops:
        line = f"{short(caller)} -> {short(entered)}"
        if stage_of(caller) in runners and line not in walk:
            walk.append(line)
    return walk


def upward(hops: Iterable[Hop]) -> list[str]:
    """Every hop from a module into a module of a higher stage."""
    return sorted({f"{short(c)} -> {short(e)}" for c, e in hops if stage_of(e) > stage_of(c)})


def documented_walk() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC.name} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [f"{a} -> {b}" for a, b in re.findall(r"^\d+\. `([\w/]+) -> ([\w/]+)`", section, re.MULTILINE)]


def traced(action: Callable[[], Any]) -> tuple[Any, list[Hop]]:
    """What ``action`` returns, and every hop it made in this thread, in order."""
    hops: list[Hop] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        entered = frame.f_globals.get("__name__", "")
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if entered != caller and entered.split(".")[0] == "cds" and caller.split(".")[0] == "cds":
            hops.append((caller, entered))

    sys.setprofile(profile)
    try:
        result = action()
    finally:
        sys.setprofile(None)
    return result, hops


def body_for(estradiol: float) -> dict[str, Any]:
    """An order-select call that gets cards: a man on anastrozole with a low estradiol (a value of each
    call's own, so that the second call derives its facts again), selecting a new anastrozole order."""
    record = [patient(), med(mid="mr-ai"), obs("2243-4", estradiol, "pg/mL", "2026-10-01")]
    return hook_body("order-select", record=record, drafts=[med(mid="draft-ai", status="draft")],
                     selections=["MedicationRequest/draft-ai"])


@pytest.fixture(scope="module")
def hook_call(tmp_path_factory) -> tuple[Any, list[Hop], Any]:
    where = tmp_path_factory.mktemp("walk")
    app = create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(trusted_clients_file_in(where)),
                      "DATABASE_URL": f"sqlite:///{where}/audit.sqlite3", "AUDIT": True,
                      "AUDIT_SPOOL_DIR": str(where / "spool"), "PUBLIC_URL": "http://localhost",
                      "AUDIT_PATIENT_KEY_SECRET": "walk-patient-key-secret-0123456789",
                      "LINK_SECRET": "walk-link-secret-0123456789abcdef", "LOG_LEVEL": "WARNING"})
    client = app.test_client()

    def post(estradiol: float) -> Any:
        headers = {"Authorization": "Bearer " + make_token("http://localhost" + SERVICE)}
        body = body_for(estradiol)
        return lambda: client.post(SERVICE, json=body, headers=headers)

    first = post(8.0)()  # the lazy set-up of a first call (schema, caches) is not the walk
    assert first.status_code == 200, first.get_data(as_text=True)
    response, hops = traced(post(9.0))  # the token is signed before the trace starts
    yield response, hops, app
    app.extensions["cds.audit"].close()


def test_the_traced_call_is_a_real_answered_and_recorded_call(hook_call):
    response, hops, app = hook_call
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["cards"]
    store = app.extensions["cds.audit"]
    assert store.token_ids is app.extensions["cds.token_ids"]  # the claim went with the record
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_record")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM seen_jti")).scalar() == 2
    modules = {m for hop in hops for m in hop}
    assert {"cds.web.api", "cds.web.guard", "cds.call.service", "cds.ledger.store"} <= modules


def test_the_call_walks_the_hops_the_docs_list(hook_call):
    _, hops, _ = hook_call
    documented = documented_walk()
    assert documented, "the docs list no hop"
    assert walk_of(hops) == documented


def test_no_hop_goes_back_up_the_stages(hook_call):
    _, hops, _ = hook_call
    assert upward(hops) == []


def test_the_walk_check_fails_on_a_walk_the_docs_do_not_list():
    documented = documented_walk()
    hops = [(f"cds.{a.replace('/', '.')}", f"cds.{b.replace('/', '.')}")
            for a, b in (line.split(" -> ") for line in documented)]
    assert walk_of(hops) == documented  # the docs' own hops read back as the docs
    swapped = [hops[1], hops[0], *hops[2:]]
    assert walk_of(swapped) != documented
    extra = [*hops, ("cds.call.service", "cds.review.queries")]
    assert walk_of(extra) != documented


@pytest.mark.parametrize("violation", [("cds.ledger.store", "cds.call.service"),
                                       ("cds.ledger.groupcommit", "cds.web.guard"),
                                       ("cds.fhir.parse", "cds.call.budget"),
                                       ("cds.auth.verify", "cds.web.guard")])
def test_the_stage_check_fails_on_a_call_back_up(hook_call, violation):
    _, hops, _ = hook_call
    caller, entered = violation
    injected = [*hops[: len(hops) // 2], violation, *hops[len(hops) // 2:]]
    assert upward(injected) == [f"{short(caller)} -> {short(entered)}"]


def test_a_call_that_fetches_its_prefetch_never_goes_back_up_the_stages(httpserver, tmp_path):
    """The same checks when every key is fetched from the EHR's FHIR server (a real socket): gathering asks
    the call layer's own client, and nothing below the call layer calls up into it."""
    from fhir_server_support import ANY_PATH, NOW, FakeFhir
    from fhir_server_support import hook_body as fetch_body

    httpserver.expect_request(ANY_PATH).respond_with_handler(FakeFhir())
    app = create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(trusted_clients_file_in(tmp_path)),
                      "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "AUDIT": True,
                      "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), "PUBLIC_URL": "http://localhost",
                      "AUDIT_PATIENT_KEY_SECRET": "walk-patient-key-secret-0123456789",
                      "LINK_SECRET": "walk-link-secret-0123456789abcdef", "LOG_LEVEL": "WARNING",
                      "NOW": NOW, "FHIR_SERVER_ALLOWLIST": httpserver.url_for("/fhir")})
    client = app.test_client()
    path = "/cds-services/bone-health-patient-view"
    body = fetch_body(fhir_server=httpserver.url_for("/fhir"))
    headers = {"Authorization": "Bearer " + make_token("http://localhost" + path)}
    try:
        response, hops = traced(lambda: client.post(path, json=body, headers=headers))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["cards"]
        assert ("cds.call.prefetch", "cds.call.fhir_client") in hops  # it did fetch
        assert upward(hops) == []
    finally:
        app.extensions["cds.audit"].close()

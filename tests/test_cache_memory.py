"""Finding 7 of the second hostile review: memory grows with the calls' text only up to the caches' bound.

100 calls, each carrying 5 estradiol Observations whose ``code.text`` is a distinct 400 KB string, once grew
the process by +563 MB: the caches (validated models, shared elements, facts, suggestions) were bounded by
their number of entries only. Now every one is bounded in bytes too (``CDS_CACHE_MAX_BYTES``, each entry
sized by the JSON text it was made from, least recently used out first).

Guarantee, by class: what the per-process caches hold is bounded by ``CDS_CACHE_MAX_BYTES``, whatever the
size or number of the resources calls carry. Tested on a real service process (``one_process_service.py``:
the whole service, one process) with its resident memory read from ``/proc`` after a warm-up and after the
large calls: the growth stays within the bound plus a margin for the allocator (generous, for a loaded
machine), and within a fraction of what the calls carried.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import requests
from builders import complete_prefetch, med, obs, patient, searchset
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.fhir.cache import LRU, json_size

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from service_process import service, sign  # noqa: E402

SERVICE = "bone-health-patient-view"
LAUNCHER = Path(__file__).resolve().parent / "one_process_service.py"
BOUND = 32 << 20  # CDS_CACHE_MAX_BYTES for the test
MARGIN = 96 << 20  # the allocator's slack: freed blocks not handed back, arenas, the request bodies in flight
CALLS, PER_CALL, TEXT = 100, 5, 400_000


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def body(n: int, text_bytes: int) -> dict:
    results = []
    for i in range(PER_CALL):
        resource = obs("2243-4", 10 + i, "pg/mL", f"2026-0{1 + i}-15", oid=f"e{n}-{i}")
        resource["code"]["text"] = f"{n}.{i} {uuid.uuid4()} " + "Estradiol " * (text_bytes // 10)
        results.append(resource)
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr-1", "patientId": "p1"},
            "prefetch": complete_prefetch(patient=patient(), estradiol=searchset(results),
                                          medications=searchset([med()]))}


def post(base: str, payload: dict) -> None:
    url = f"{base}/cds-services/{SERVICE}"
    response = requests.post(url, json=payload, timeout=120, headers={"Authorization": f"Bearer {sign(url)}"})
    assert response.status_code == 200, response.text[:300]


@pytest.mark.slow
def test_memory_after_many_calls_with_large_texts_stays_within_the_cache_bound(tmp_path):
    env = {"CDS_CACHE_MAX_BYTES": str(BOUND)}
    with service(workers=0, folder=tmp_path / "service", env=env, launcher=LAUNCHER) as proc:
        for n in range(20):  # warm-up: every code path once, the caches with small entries
            post(proc.url, body(-n - 1, 100))
        post(proc.url, body(-100, TEXT))  # one large call: the allocator's buffers for bodies this size
        before = rss(proc.proc.pid)
        for n in range(CALLS):
            post(proc.url, body(n, TEXT))
        grown = rss(proc.proc.pid) - before
    carried = CALLS * PER_CALL * TEXT
    assert grown < BOUND + MARGIN, f"+{grown >> 20} MB for {carried >> 20} MB of text carried"
    assert grown < carried / 2, grown


def test_every_cache_has_its_share_of_the_bound_and_the_shares_add_up_to_it():
    from cds import create_app
    from cds.fhir import parse as fhir_parse

    total = 10_000_000
    app = create_app({"CACHE_MAX_BYTES": total, "AUDIT": False})
    service_ = app.extensions["cds.service"]
    shares = [service_.model_cache.max_bytes, service_.derived_cache.max_bytes,
              fhir_parse.ELEMENT_CACHE_BYTES, fhir_parse.OUTGOING_CACHE_BYTES]
    assert all(share > 0 for share in shares) and sum(shares) <= total


@settings(max_examples=200, deadline=None)
@given(max_entries=st.integers(0, 20), max_bytes=st.integers(0, 10_000),
       puts=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3_000)), max_size=80))
def test_a_cache_never_holds_more_than_its_bounds(max_entries, max_bytes, puts):
    cache: LRU[int, str] = LRU(max_entries, max_bytes)
    for key, size in puts:
        cache.put(key, f"v{key}", size)
        assert len(cache) <= max_entries and cache.bytes <= max_bytes
        assert cache.bytes == sum(size for _, size in cache._items.values())
        kept = key in cache
        assert kept == (0 < max_entries and 0 < max_bytes and size <= max_bytes // 8)  # the newest stays
        if kept:
            assert cache.get(key) == f"v{key}"


def test_json_size_grows_with_the_text_and_with_its_members():
    assert json_size(b'{"a":"' + b"x" * 400_000 + b'"}') > 400_000
    assert json_size(b'{"a":1,"b":2}') > json_size(b'{"ab":12}')

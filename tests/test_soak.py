"""The short run of ``scripts/soak.py``: two `cds serve --prod` processes on one PostgreSQL schema, sixteen
threads, 80 patients, a few hundred calls. Every call answered 200 with exactly its own patient's cards;
one audit record per call in one verified chain; worker memory flat. ``SOAK_REQUESTS`` sets the count (the
long run is ``scripts/soak.py --requests 20000``; see docs/robustness.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from soak import PG_URL, make_patient, run_soak, scenario_bundles  # noqa: E402

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "300"))


@pytest.fixture(scope="module")
def postgres() -> str:
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {str(exc.orig).splitlines()[0]}")
    finally:
        engine.dispose()
    return PG_URL


def test_patients_made_from_one_scenario_differ_in_id_and_values():
    scenarios = scenario_bundles()
    assert len(scenarios) >= 20
    n = len(scenarios)
    (_, first), (_, again) = make_patient(0, scenarios), make_patient(n, scenarios)
    assert first["context"]["patientId"] != again["context"]["patientId"]
    values = [
        [
            e["resource"].get("valueQuantity", {}).get("value")
            for e in (b["prefetch"].get(k) or {}).get("entry", [])
            if isinstance(b["prefetch"].get(k), dict)
        ]
        for b in (first, again)
        for k in ("estradiol", "vitaminD", "dxa")
    ]
    assert values[:3] != values[3:] or not any(values)
    assert first["context"]["patientId"] not in str(again)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_many_threads_many_patients(postgres, tmp_path):
    summary = run_soak(
        REQUESTS, patients=80, threads=16, workers=2, base_url=postgres, folder=tmp_path, log=lambda _m: None
    )
    assert summary["failures"] == [], summary["failures"][:10]
    assert summary["statuses"] == {"200": REQUESTS}
    assert summary["audit_records_stored"] == REQUESTS == summary["audit_records_expected"]
    assert summary["chain_broken"] is None and summary["chain_checked"] == REQUESTS
    assert summary["spooled_left"] == 0
    assert summary["service_log_tracebacks"] == 0
    assert not summary["workers_replaced"], "a worker died or was replaced during the run"
    assert len(summary["rss_kib_before"]) == 4
    for pid, growth in summary["rss_growth_kib"].items():
        assert growth < 30_000, f"worker {pid} grew by {growth} KiB"

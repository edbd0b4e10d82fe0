"""Database faults under load, over real HTTP: a private PostgreSQL server stopped and restarted while eight
threads keep calling, and the spool folder made unwritable while the database is down.

Every call must answer 200 with its card within a bounded time; afterwards (once the spool and the memory
hold have drained) the database holds exactly one record per call — each call's own hookInstance, none
twice — and the chain verifies.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from pathlib import Path

import pytest
import requests
from audit_support import SERVICE, hook_body
from support import make_token

from cds.review import queries

THREADS = 8
CALL_BUDGET = 5.0  # seconds: no call may wait on the database longer than this


class Load:
    """``THREADS`` threads calling the service until ``total`` calls are made; ``reached(n)`` waits."""

    def __init__(self, base: str, total: int):
        self.base, self.total = base, total
        self.done = 0
        self.sent: list[str] = []
        self.failures: list[str] = []
        self.slowest = 0.0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)

    def call(self, i: int) -> None:
        instance = f"00000000-0000-4000-8000-{i:012d}"
        url = f"{self.base}/cds-services/{SERVICE}"
        started = time.perf_counter()
        try:
            response = requests.post(url, json=hook_body(f"patient-{i}", instance=instance), timeout=30,
                                     headers={"Authorization": f"Bearer {make_token(url)}"})
            ok = response.status_code == 200 and len(response.json()["cards"]) == 1
            problem = None if ok else f"call {i}: HTTP {response.status_code} {response.text[:200]}"
        except requests.RequestException as exc:
            problem = f"call {i}: {type(exc).__name__}"
        elapsed = time.perf_counter() - started
        with self.cond:
            self.done += 1
            self.sent.append(instance)
            self.slowest = max(self.slowest, elapsed)
            if problem:
                self.failures.append(problem)
            self.cond.notify_all()

    def run(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(self.call, range(self.total)))

    def reached(self, n: int, timeout: float = 60) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.done >= n, timeout), f"only {self.done} calls done"


def run_with_faults(base: str, total: int, steps: list[tuple[int, object]]) -> Load:
    """Run the load; at each ``(calls done, action)`` step, do the action while the load goes on."""
    load = Load(base, total)
    runner = threading.Thread(target=load.run)
    runner.start()
    try:
        for at, action in steps:
            load.reached(at)
            action()
    finally:
        runner.join(timeout=120)
    assert not runner.is_alive()
    return load


def check_trail(store, load: Load) -> None:
    assert load.failures == [], load.failures[:5]
    assert load.slowest < CALL_BUDGET, f"a call took {load.slowest:.1f} s"
    assert store.wait_drained(120), f"{store.health()['spool']} entries still waiting"
    assert store.lost == 0
    checked, broken = queries.verify_chain(store.engine)
    assert broken is None, broken
    stored = [r.hook_instance for r in queries.iter_records(store.engine)]
    assert checked == len(stored) == load.total
    assert sorted(stored) == sorted(load.sent)  # each call once: none lost, none doubled


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_stopped_and_restarted_under_load(make_app, private_pg, live_server):
    app = make_app(private_pg.url)
    store = app.extensions["cds.audit"]
    base = live_server(app)
    spooled = []

    def restart() -> None:
        spooled.append(store.spool.count())
        private_pg.start()

    load = run_with_faults(base, 160, [(30, private_pg.stop), (90, restart)])
    assert spooled[0] > 0  # the outage was real: records went to the spool
    check_trail(store, load)


@pytest.mark.postgres
@pytest.mark.slow
def test_spool_unwritable_while_postgres_is_down(make_app, private_pg, live_server, tmp_path):
    app = make_app(private_pg.url)
    store = app.extensions["cds.audit"]
    spool = Path(app.config["AUDIT_SPOOL_DIR"])
    spool.mkdir(parents=True, exist_ok=True)
    base = live_server(app)
    seen: dict[str, object] = {}

    def break_both() -> None:
        # The spool first, while the database still takes every record (so nothing is spooled, and no
        # spooling call can recreate the folder between the rename and the file taking its place).
        os.rename(spool, tmp_path / "spool-away")
        spool.write_text("a file where the spool folder should be: nothing can be written there")
        private_pg.stop()

    def mend_spool() -> None:
        seen["held"] = store.health()["spool"]
        assert not any((tmp_path / "spool-away").glob("*.json"))  # nothing was spooled before the break
        spool.unlink()  # the spool makes its folder again on its next write

    load = run_with_faults(base, 160, [(20, break_both), (70, mend_spool), (110, private_pg.start)])
    assert seen["held"] > 0  # records were waiting in memory while neither could take them
    check_trail(store, load)

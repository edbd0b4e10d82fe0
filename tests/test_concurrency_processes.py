"""Several processes, each with several threads, evaluating different patients at once never mix facts.

The patients are the soak patients (``scripts/soak.py``: scenario fixtures, each with its own id and
shifted values). Their cards are computed first one at a time in this process; then three spawned
processes, four threads each, evaluate all of them in different orders through the whole hook pipeline
(``HookService.call``), and every answer must equal that patient's own cards.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import multiprocessing
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from soak import cards_in_threads, expected_cards, make_patient, scenario_bundles  # noqa: E402

PATIENTS, PROCESSES, THREADS, ROUNDS = 48, 3, 4, 2


@pytest.mark.slow
def test_processes_and_threads_evaluating_at_once_give_each_patient_its_own_cards():
    now = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
    scenarios = scenario_bundles()
    people = [make_patient(k, scenarios) for k in range(PATIENTS)]
    expected = expected_cards(people, now)
    assert len({str(c) for c in expected}) > PATIENTS // 2  # the patients really differ
    orders = []
    for p in range(PROCESSES):
        order = list(range(PATIENTS)) * ROUNDS
        random.Random(p).shuffle(order)
        orders.append(order)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        results = list(
            pool.map(
                cards_in_threads,
                orders,
                [PATIENTS] * PROCESSES,
                [THREADS] * PROCESSES,
                [now.isoformat()] * PROCESSES,
            )
        )
    calls = 0
    for result in results:
        for k, cards in result:
            calls += 1
            assert cards == expected[k], f"patient {k} got other cards"
    assert calls == PATIENTS * PROCESSES * ROUNDS

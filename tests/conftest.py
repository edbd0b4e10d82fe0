"""Fixtures for every test; the helpers themselves live in ``support.py`` (importable by test modules)."""

import pytest
from redis_support import redis_db  # noqa: F401 - the test Redis (skips when none answers)
from support import (  # noqa: F401 - fixtures are found by name
    SLOW_TIMEOUT_SECONDS,
    _keep_state_out_of_the_repo,
    app,
    auth_config,
    authed_client,
    browser,
    call,
    client,
    client_token,
    live_server,
    pg_base_url,
    trusted_clients_file,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_SECONDS))

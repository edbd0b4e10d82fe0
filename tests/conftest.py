from __future__ import annotations

import datetime as dt

import pytest

from cds import create_app

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def app(tmp_path):
    return create_app({"NOW": NOW, "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3"})


@pytest.fixture
def client(app):
    return app.test_client()


SERVICE = {"patient-view": "bone-health-patient-view", "order-select": "bone-health-order-select",
           "order-sign": "bone-health-order-sign"}


@pytest.fixture
def call(client):
    """POST a hook body to the service for its hook; return the response."""

    def _call(body, service: str | None = None):
        return client.post(f"/cds-services/{service or SERVICE[body['hook']]}", json=body)

    return _call

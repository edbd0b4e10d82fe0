from __future__ import annotations


def test_discovery_lists_one_service_per_hook(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert sorted(s["hook"] for s in services) == ["order-select", "order-sign", "patient-view"]
    for service in services:
        assert service["id"] and service["title"] and service["description"]
        prefetch = service["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert "2243-4" in prefetch["estradiol"] and "14715-7" in prefetch["estradiol"]
        assert "62292-8" in prefetch["vitaminD"]
        assert "38267-1" in prefetch["dxa"] and "80946-7" in prefetch["dxa"]
        assert prefetch["medications"].startswith(
            "MedicationRequest?patient={{context.patientId}}&status=active"
        )
        # selections and draftOrders are not prefetch tokens
        assert not any("selections" in q or "draftOrders" in q for q in prefetch.values())


def test_health_reports_rule_pack(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert body["rulePack"]["id"] == "bone-health-ai"
    assert len(body["rulePack"]["contentHash"]) == 64

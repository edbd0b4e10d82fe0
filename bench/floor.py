"""The floor: a no-op Flask endpoint that takes the same request body and answers ``{"cards": []}``.

Served by the same production server with the same workers as the service, it measures what Flask and the
server cost on their own; the benchmark reports the service as a ratio of it.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/cds-services/<service_id>")
def hook(service_id: str):
    request.get_data()
    return jsonify({"cards": []})


@app.get("/health")
def health():
    return jsonify({"status": "ok"})

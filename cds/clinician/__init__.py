"""The clinician's "Why this card?" page, opened from a card inside the EHR, and its chart.

    page.py      /why/<link>: the card, its rule and evidence, no login (the signed link is the credential)
    chart.py     the patient's results over time, as SVG (cached by content)
    markdown.py  the card's Markdown as the EHR shows it (markdown-it-py, HTML off)

The link itself is signed by ``cds.auth.links``; ``card_linker`` builds it for the call layer.
"""

from __future__ import annotations

import logging
from typing import Any

from cds.ledger.keys import link_secret

log = logging.getLogger("cds.audit")


def card_linker(values: dict[str, Any]):
    """The service's explanation-link builder: ``(base_url, card_uuid) -> url`` of the clinician's "Why this
    card?" page, signed for that card with the link secret and expiring after ``WHY_LINK_HOURS``."""
    from cds.auth.links import PageLinker

    # the lifetime is greater than 0: checked with the settings
    return PageLinker(link_secret(values), values["WHY_LINK_HOURS"] * 3600, "/why")


def init_app(app) -> None:
    """Serve the clinicians' "Why this card?" pages (they read the store ``cds.review.init_app`` set)."""
    from cds.clinician import page
    from cds.clinician.chart import SvgCache

    app.extensions["cds.link_secret"] = link_secret(app.config)
    app.register_blueprint(page.bp)
    app.extensions["cds.chart_cache"] = SvgCache(int(app.config.get("CHART_CACHE_BYTES", 8_000_000)))

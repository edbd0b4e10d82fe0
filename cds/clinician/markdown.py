"""A card's Markdown as the EHR shows it, for the clinician's "Why this card?" page. Pure code.

CDS Hooks card ``detail`` is GitHub-flavoured Markdown; the page renders it with a maintained CommonMark
parser (markdown-it-py) the way an EHR does: bold, lists and links, with raw HTML switched off (an HTML tag
in the text is shown as text) and links kept clickable only for the schemes in ``SAFE_SCHEMES`` (anything
else, ``javascript:`` or ``data:`` included, stays text). Text from FHIR data was escaped for Markdown and
HTML before it went into the card (``cds.rules.templating.escape_text``), so it reads as text here too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

SAFE_SCHEMES = ("https:", "http:", "mailto:")


def _safe_link(url: str) -> bool:
    return url.strip().lower().startswith(SAFE_SCHEMES)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.validateLink = _safe_link  # type: ignore[method-assign]

    def link_open(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "noreferrer noopener")
        return str(renderer.renderToken(tokens, idx, options, env))

    md.add_render_rule("link_open", link_open)
    return md


def to_html(text: str) -> Markup:
    """``text`` (a card's detail) as safe HTML."""
    return Markup(_parser().render(text or ""))  # noqa: S704 - markdown-it with html off escapes all text

"""Content negotiation: the offer an ``Accept`` header prefers, or a 406 problem (RFC 9110 §12.5.1)."""

from __future__ import annotations

from .problems import ProblemError

JSON = "application/json"
TEXT = "text/plain"
IMAGE_TYPES = ("image/svg+xml", "image/png")
TABLES = (JSON, TEXT)
"""JSON, or a table for terminals (/plan)."""
PICTURES = (*TABLES, *IMAGE_TYPES)
"""JSON, a table, or a picture (/stats, /propagation)."""


def _quality(accept: str, offer: str) -> float:
    """q of ``offer`` under ``accept``: the q of its most specific matching media range."""
    major = offer.split("/", maxsplit=1)[0]
    best, rank = 0.0, -1
    for item in accept.split(","):
        kind, *params = (part.strip().lower() for part in item.split(";"))
        this = 2 if kind == offer else 1 if kind == f"{major}/*" else 0 if kind == "*/*" else -1
        if this > rank:
            q = 1.0
            for p in params:
                if p.startswith("q="):
                    try:
                        q = float(p[2:])
                    except ValueError:
                        q = 0.0
            best, rank = q, this
    return best


def negotiate(accept: str | None, offers: tuple[str, ...]) -> str:
    """The offer with the highest q under ``accept`` (the first offer wins ties; no Accept: the first).

    Raises the ``not-acceptable`` problem (406) when ``accept`` excludes every offer.
    """
    if not accept:
        return offers[0]
    best, best_q = offers[0], 0.0
    for offer in offers:
        q = _quality(accept, offer)
        if q > best_q:
            best, best_q = offer, q
    if best_q <= 0:
        raise ProblemError("not-acceptable", f"Accept {accept[:100]!r}: this resource is " + ", ".join(offers))
    return best

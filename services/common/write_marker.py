"""The writer's session reads its own writes, whichever process answers.

Other sessions see a write within the cache's staleness bound (LEASE_S,
services/common/cache/lease.py), since no writer waits for the other
processes. The writer's own session must see it at once: a write's response
carries a marker, `<ms since epoch>.<lsn hex>` (the LSN empty without read
replicas), as a cookie (`runway_w`: HttpOnly, SameSite=Lax, Path=/, Max-Age
MARKER_MAX_AGE_S) and, for clients without a cookie jar, in the
`X-Runway-Write` header, which they send back as that cookie. A read carrying
a fresh marker skips the local tier and the loads under way of the process
that answers it, and with replicas loads at or past the marker's LSN
(ResponseCache.lookup_after_write). A read without a Cookie header pays one
header lookup (responses.py).
"""

from __future__ import annotations

import time

from aiohttp import hdrs, web

COOKIE = "runway_w"
HEADER = "X-Runway-Write"
# A marker counts this long after its write: four times the staleness bound
# (0.25 s), which also covers clock skew between hosts up to about 0.75 s.
FRESH_S = 1.0
MARKER_MAX_AGE_S = 1  # the cookie's Max-Age (whole seconds)


# The Set-Cookie value after the marker, as http.cookies writes it for
# set_cookie(COOKIE, marker, max_age=..., httponly=True, samesite="Lax", path="/"),
# which cost 15 us a write (a marker is digits, "." and hex: nothing to quote).
_COOKIE_ATTRIBUTES = f"; HttpOnly; Max-Age={MARKER_MAX_AGE_S}; Path=/; SameSite=Lax"


def _cookie(marker: str) -> str:
    return f"{COOKIE}={marker}{_COOKIE_ATTRIBUTES}"


def header_lines(marker: str) -> bytes:
    """The two headers mark() adds, as lines of a prebuilt head (responses.py)."""
    return f"Set-Cookie: {_cookie(marker)}\r\n{HEADER}: {marker}\r\n".encode()


def mark(response: web.StreamResponse, marker: str) -> web.StreamResponse:
    """Attach a write's marker (ResponseCache.invalidate's) to its response."""
    headers = response.headers
    headers.add(hdrs.SET_COOKIE, _cookie(marker))
    headers[HEADER] = marker
    return response


def fresh_position(request: web.Request) -> int | None:
    """The LSN of the session's write if its marker is fresh (0 without
    replicas), else None. Call only when the request has a Cookie header."""
    marker = request.cookies.get(COOKIE)
    if not marker:
        return None
    written, _, lsn = marker.partition(".")
    try:
        age = time.time() - int(written) / 1000
        position = int(lsn, 16) if lsn else 0
    except ValueError:
        return None
    if not -FRESH_S < age < FRESH_S:
        return None
    return position

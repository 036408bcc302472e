"""Strip credentials and signed query strings from URLs before anything is written or logged.

A catalog URL may carry a token (`?token=...`, `https://user:password@host/`), and signed
asset hrefs (S3 presigned, Azure SAS, Planetary Computer) carry their signature in the query
string. `redact_url` keeps scheme, host, port and path and drops userinfo, query and
fragment; `redact_text` does that to every URL found in a message.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MARK = "..."  # stands for a removed query string or fragment: the reader sees it was there

# A URL: a scheme, "://", then anything up to whitespace or a character that ends a URL in
# prose or in a repr/JSON/XML ("'", '"', "<", ">", "`"). GDAL paths (/vsicurl/http://...)
# are matched from their inner scheme on.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>`]+")
_TRAILING = ".,;:!)]}"


def redact_url(url: str) -> str:
    """`url` without user name, password, query string and fragment.

    "https://u:pw@host:8443/a/b.tif?sig=x#f" -> "https://host:8443/a/b.tif?..." (a query
    or fragment is replaced by "?..." so a reader knows one was removed). Text that is not
    a URL with a host comes back unchanged, except a "?query" removed from it.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an invalid IPv6 netloc: drop everything after the scheme
        scheme = text.split(":", 1)[0]
        return f"{scheme}://{MARK}" if "://" in text else MARK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    removed = bool(parts.query or parts.fragment or text.rstrip().endswith(("?", "#")))
    out = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return out + ("?" + MARK if removed else "")


def redact_text(text: Any) -> str:
    """`text` (str() of it) with every URL in it passed through `redact_url`."""

    def one(match: re.Match) -> str:
        url = match.group(0)
        tail = ""
        while url and url[-1] in _TRAILING:  # "(see http://x/a.tif)." keeps its ")."
            url, tail = url[:-1], url[-1] + tail
        return redact_url(url) + tail

    return _URL.sub(one, str(text))


def redact_obj(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_obj(v) for v in value]
    return value

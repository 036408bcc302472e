"""What a run read, from the range server's request log (test and bench helper).

`ranges(log)` merges the byte ranges served per path; `span_bytes` counts distinct bytes;
`covered(inner, outer)` says whether every range of one run lies in another's.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

Spans = Dict[str, List[Tuple[int, int]]]


def ranges(log: Iterable[dict]) -> Spans:
    """{path: [(first, last byte)]} of the data served, merged (a whole file: (0, huge))."""
    spans: Spans = {}
    for e in log:
        if e.get("status") not in (200, 206) or not e.get("bytes"):
            continue
        text = str(e.get("range") or "")
        if not text.startswith("bytes="):
            spans.setdefault(e["path"], []).append((0, 1 << 62))
            continue
        for part in text[6:].split(","):
            a, b = part.strip().split("-")
            spans.setdefault(e["path"], []).append((int(a), int(b)))
    return {p: _merge(v) for p, v in spans.items()}


def _merge(spans):
    out: List[Tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def span_bytes(spans: Spans) -> int:
    return sum(b - a + 1 for v in spans.values() for a, b in v)


def covered(inner: Spans, outer: Spans) -> bool:
    """Every byte range of `inner` lies in one of `outer`'s."""
    return all(any(x <= a and b <= y for x, y in outer.get(path, []))
               for path, spans in inner.items() for a, b in spans)


def served_bytes(log: Iterable[dict]) -> int:
    """Body bytes sent, every request counted (a range fetched twice counts twice)."""
    return sum(int(e.get("bytes") or 0) for e in log)

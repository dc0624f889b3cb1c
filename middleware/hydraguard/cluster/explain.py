"""Turn a cluster's stored links back into evidence an operator can read.

Both indexes gather the same raw facts (what each member was seen with and
when, pair edges, operator links) and this one function shapes them, so the
memory and the Redis index explain a cluster the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .components import pair_key
from .model import MANUAL, ClusterInfo, Evidence, Link

if TYPE_CHECKING:
    from .index import ClusterIndex

Value = tuple[str, str]  # (signal, value)


def build_info(
    cid: str,
    members: Sequence[str],
    seen: Mapping[str, Mapping[Value, float]],
    edges: Iterable[tuple[float, str, str]],
    manual: Mapping[tuple[str, str], tuple[str, float]],
    *,
    strong: Collection[str],
    weights: Mapping[str, float],
    saturated: Collection[Value],
    threshold: float,
) -> ClusterInfo:
    def evidence(value: Value, ts: float) -> Evidence:
        signal, text = value
        return Evidence(signal, text, weights[signal], ts, value in saturated)

    links: list[tuple[float, str, str, Link]] = []
    # A strong value (explicit, or heavy enough alone) links each holder to its first.
    holders: dict[Value, list[tuple[float, str]]] = {}
    for name in members:
        for value, first_seen in seen[name].items():
            if value[0] in strong:
                holders.setdefault(value, []).append((first_seen, name))
    for value, held in holders.items():
        held.sort()
        first = held[0][1]
        for ts, other in held[1:]:
            links.append((ts, first, other, Link(first, other, (evidence(value, ts),))))
    for ts, a, b in edges:
        a, b = min(a, b), max(a, b)
        found: list[Evidence] = []
        if (a, b) in manual:
            reason, when = manual[a, b]
            found.append(Evidence(MANUAL, reason, threshold, when))
        mine, theirs = seen[a], seen[b]
        for value, first_seen in mine.items():
            if value in theirs and value[0] not in strong:
                found.append(evidence(value, max(first_seen, theirs[value])))
        links.append((ts, a, b, Link(a, b, tuple(found))))
    links.sort(key=lambda item: item[:3])
    return ClusterInfo(cid, tuple(sorted(members)), tuple(item[3] for item in links))


def explain_memory(index: ClusterIndex, cid: str, group: list[int]) -> ClusterInfo:
    names, in_group = index.account_names, set(group)
    seen: dict[str, dict[Value, float]] = {}
    saturated: set[Value] = set()
    for x in group:
        values = seen[names[x]] = {}
        row = index.seen[x]
        for i in range(0, len(row), 2):
            vid = int(row[i])
            value = (index.signal_names[index.value_signal[vid]], index.value_text[vid])
            values[value] = row[i + 1]
            if vid in index.saturated:
                saturated.add(value)
    edges = [
        (index.edges[pair_key(x, y)], names[x], names[y])
        for x in group
        for y in index.adjacent.get(x, ())
        if x < y and y in in_group
    ]
    manual: dict[tuple[str, str], tuple[str, float]] = {}
    for x in group:
        for y in index.adjacent.get(x, ()):
            found = index.manual.get(pair_key(x, y))
            if found is not None:
                manual[min(names[x], names[y]), max(names[x], names[y])] = found
    return build_info(
        cid,
        [names[x] for x in group],
        seen,
        edges,
        manual,
        strong={n for n, s in zip(index.signal_names, index.strong, strict=True) if s},
        weights=dict(zip(index.signal_names, index.weights, strict=True)),
        saturated=saturated,
        threshold=index.config.threshold,
    )

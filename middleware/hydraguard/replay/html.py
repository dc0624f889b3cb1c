"""The report as one self-contained HTML page: tables and inline SVG plots, no script,
no stylesheet or font from the network, so it opens anywhere and can be mailed around."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg{background:#fafafa;border:1px solid #ddd;margin:.3em 1em 1em 0}
"""
_SERVED, _WITHHELD = "#2a8a4a", "#c0392b"
_W, _H, _PAD = 560, 200, 44
_CAMPAIGN_COLUMNS = (
    "kind",
    "accounts",
    "requests",
    "requests_refused",
    "output_tokens_requested",
    "output_tokens_served",
    "output_tokens_served_share",
    "time_to_first_action",
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    opening = '<td class="n">' if numeric else "<td>"
    return f"{opening}{escape(_fmt(value))}</td>"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pairs(data: dict[str, Any]) -> str:
    return _table(["", "value"], [[k.replace("_", " "), v] for k, v in data.items()])


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _plot(title: str, served: list[int], withheld: list[int], start: float, step: float) -> str:
    """Served and withheld output tokens per time bucket, as two polylines."""
    top = max([*served, *withheld, 1])
    n = len(served)
    span = max(n - 1, 1)

    def points(values: list[int]) -> str:
        return " ".join(
            f"{_PAD + i * (_W - _PAD - 10) / span:.1f},{_H - 24 - v * (_H - 44) / top:.1f}"
            for i, v in enumerate(values)
        )

    end = start + step * n
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img">'
        f"<title>{escape(title)}</title>"
        f'<text x="{_PAD}" y="14" font-size="12">{escape(title)}</text>'
        f'<line x1="{_PAD}" y1="{_H - 24}" x2="{_W - 10}" y2="{_H - 24}" stroke="#999"/>'
        f'<line x1="{_PAD}" y1="20" x2="{_PAD}" y2="{_H - 24}" stroke="#999"/>'
        f'<text x="2" y="28" font-size="10">{_fmt(top)}</text>'
        f'<text x="{_PAD}" y="{_H - 8}" font-size="10">{_when(start)}</text>'
        f'<text x="{_W - 110}" y="{_H - 8}" font-size="10">{_when(end)}</text>'
        f'<polyline class="served" fill="none" stroke="{_SERVED}" points="{points(served)}"/>'
        f'<polyline class="withheld" fill="none" stroke="{_WITHHELD}" points="{points(withheld)}"/>'
        f'<text x="{_W - 230}" y="14" font-size="11" fill="{_SERVED}">served</text>'
        f'<text x="{_W - 180}" y="14" font-size="11" fill="{_WITHHELD}">refused or cut</text>'
        "</svg>"
    )


def _policy_section(key: str, report: dict[str, Any]) -> str:
    totals = report["totals"]
    parts = [f"<h2>Policy {escape(report['policy']['name'])} <small>({escape(key)})</small></h2>"]
    if "efficacy" in report:
        parts += ["<h3>Efficacy</h3>", _pairs(report["efficacy"])]
    plain = {k: v for k, v in totals.items() if not isinstance(v, dict)}
    parts += ["<h3>Totals</h3>", _pairs(plain)]
    timeline = report["timeline"]
    if timeline["series"]:
        parts.append("<h3>Output tokens over time</h3><div>")
        for klass, series in timeline["series"].items():
            parts.append(
                _plot(
                    f"{klass}: tokens per {timeline['bucket_seconds'] / 60:g} min",
                    series["served"],
                    series["withheld"],
                    timeline["start"],
                    timeline["bucket_seconds"],
                )
            )
        parts.append("</div>")
    for name in ("by_rule", "by_action", "by_shadow_action"):
        if totals[name]:
            parts += [f"<h3>{name.replace('_', ' ').capitalize()}</h3>", _pairs(totals[name])]
    if report.get("classes"):
        columns = list(next(iter(report["classes"].values())))
        rows = [[klass, *(group[c] for c in columns)] for klass, group in report["classes"].items()]
        parts += ["<h3>By class</h3>", _table(["class", *columns], rows)]
    if report.get("campaigns"):
        columns = list(_CAMPAIGN_COLUMNS)
        rows = [[name, *(c_[c] for c in columns)] for name, c_ in report["campaigns"].items()]
        parts += ["<h3>Campaigns</h3>", _table(["campaign", *columns], rows)]
    for name, rows in report["top"].items():
        if rows:
            columns = list(rows[0])
            parts += [
                f"<h3>Top {name} by action</h3>",
                _table(columns, [[r[c] for c in columns] for r in rows]),
            ]
    if report["invalid_lines"]:
        parts += [
            "<h3>Invalid lines</h3>",
            _table(["line", "error"], [[r["line"], r["error"]] for r in report["invalid_lines"]]),
        ]
    return "\n".join(parts)


def _comparison(policies: dict[str, Any]) -> str:
    keys = list(policies)
    rows: list[list[Any]] = []
    for section in ("efficacy", "totals"):
        for metric in next(iter(policies.values())).get(section, {}):
            values = [policies[k].get(section, {}).get(metric) for k in keys]
            if not any(isinstance(v, dict) for v in values):
                rows.append([metric.replace("_", " "), *values])
    return "<h2>Side by side</h2>" + _table(["", *keys], rows)


def render(report: dict[str, Any]) -> str:
    policies: dict[str, Any] = report["policies"]
    traffic = report["traffic"]
    named = " ".join(traffic) if isinstance(traffic, list) else str(traffic)
    body = [f"<h1>hydraguard replay</h1><p>Traffic: <code>{escape(named)}</code>"]
    if report.get("labels"):
        body.append(f" — labels: <code>{escape(str(report['labels']))}</code>")
    body.append("</p>")
    if len(policies) > 1:
        body.append(_comparison(policies))
    body += [_policy_section(key, section) for key, section in policies.items()]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>hydraguard replay report</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )

"""The HTML report of one experiment readout: one self-contained page (inline CSS and SVG, no script, no CDN).

Sections: the decision; the sample-ratio check; per metric a plot of each arm's estimate with its interval
and a table of the differences to the default arm; the sequential test's trajectory over the daily looks
(always-valid p-value against alpha); guardrails; each arm's offline evaluation; the event accounting.
"""

from __future__ import annotations

import html
import math
from typing import Any

from skyrec.experiments.readout import METRICS

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
LABELS = {"exposure": "impressions per user", "click_through": "clicks per impression",
          "plays_per_impression": "plays per impression", "play_through": "share of the item played",
          "coverage": "share of the catalogue shown", "novelty": "novelty (bits)"}


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return _e(v)


def _ci(ci: Any) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "–"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:+.2%}"


def interval_plot(metric: str, arms: dict[str, Any], width: int = 520) -> str:
    """Each arm's estimate (dot) and interval (bar) on one horizontal axis."""
    rows = [(a, d[metric]["value"], d[metric].get("ci")) for a, d in arms.items()]
    values = [x for _, v, ci in rows for x in ([v] + (list(ci) if ci else [])) if x is not None]
    height = 30 + 28 * len(rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(metric)} per arm">']
    if not values:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    lo, hi = lo - pad, hi + pad
    left, right = 110, width - 20

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    for i, (arm, v, ci) in enumerate(rows):
        y = 22 + 28 * i
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" font-size="12">{_e(arm)}</text>')
        if ci:
            parts.append(f'<line x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{y}" y2="{y}" stroke="{colour}" '
                         f'stroke-width="3"/>')
        if v is not None:
            parts.append(f'<circle cx="{x(v):.1f}" cy="{y}" r="5" fill="{colour}"><title>{_e(arm)}: {_num(v)} '
                         f'{_ci(ci)}</title></circle>')
    axis_y = height - 8
    parts.append(f'<line x1="{left}" x2="{right}" y1="{axis_y - 6}" y2="{axis_y - 6}" stroke="#999"/>')
    parts.append(f'<text x="{left}" y="{axis_y + 4}" font-size="10">{_num(lo, 3)}</text>')
    parts.append(f'<text x="{right}" y="{axis_y + 4}" font-size="10" text-anchor="end">{_num(hi, 3)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def trajectory_plot(trajectory: list[dict[str, Any]], arms: list[str], alpha: float, width: int = 520,
                    height: int = 200) -> str:
    """The always-valid p-value per look (log scale), with the alpha line."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="always-valid p-value per look">']
    left, right, top, bottom = 50, width - 20, 15, height - 30
    floor = 1e-6

    def y(p: float) -> float:
        return top + (-math.log10(max(p, floor))) / 6 * (bottom - top)

    n = max(len(trajectory), 1)

    def x(i: int) -> float:
        return left + (i / (n - 1) if n > 1 else 0.5) * (right - left)

    for p in (1.0, 1e-2, 1e-4, 1e-6):
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y(p):.1f}" y2="{y(p):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y(p) + 4:.1f}" font-size="10" text-anchor="end">{p:g}</text>')
    parts.append(f'<line x1="{left}" x2="{right}" y1="{y(alpha):.1f}" y2="{y(alpha):.1f}" stroke="#d62728" '
                 f'stroke-dasharray="4 3"/><text x="{right}" y="{y(alpha) - 4:.1f}" font-size="10" '
                 f'text-anchor="end" fill="#d62728">alpha {alpha:g}</text>')
    for k, arm in enumerate(arms):
        pts = [(x(i), y(look[arm]["p_value"])) for i, look in enumerate(trajectory)
               if isinstance(look.get(arm), dict) and look[arm].get("p_value") is not None]
        colour = COLOURS[(k + 1) % len(COLOURS)]
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for a, b in pts:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{left + 5}" y="{bottom + 22 - 0 * k}" font-size="11" fill="{colour}" '
                     f'dx="{k * 120}">{_e(arm)}</text>')
    parts.append(f'<text x="{right}" y="{bottom + 22}" font-size="10" text-anchor="end">look (daily readout) →'
                 '</text></svg>')
    return "".join(parts)


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def render(r: dict[str, Any]) -> str:
    name = r.get("experiment", "?")
    arms: dict[str, Any] = r["arms"]
    default = r["default_arm"]
    treatments = [a for a in arms if a != default]
    decision = r["decision"]
    status_colour = {"treatment_better": "#2ca02c", "no_difference_yet": "#555", "treatment_worse": "#d62728",
                     "invalid_srm": "#d62728", "guardrail_breached": "#d62728"}.get(decision["status"], "#555")
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>Experiment {_e(name)}: readout {_e(r.get('run', ''))}</title>",
           "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;"
           "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
           ".decision{padding:.8em 1em;border-left:6px solid;background:#fafafa;font-size:1.1em}"
           ".metric{display:inline-block;vertical-align:top;margin-right:2em}small{color:#666}</style></head><body>",
           f"<h1>Experiment <code>{_e(name)}</code></h1>",
           f"<p>Rail <code>{_e(r.get('rail', ''))}</code>; readout <code>{_e(r.get('run', ''))}</code> over "
           f"{_e(r.get('window', {}).get('start', ''))} – {_e(r.get('window', {}).get('end', ''))}; "
           f"primary metric <b>{_e(r['primary_metric'])}</b>, alpha {_num(r['alpha'])}; default arm "
           f"<code>{_e(default)}</code>.</p>",
           f"<p class='decision' style='border-color:{status_colour}'><b>{_e(decision['status'])}</b>: "
           f"{_e(decision['message'])}</p>"]
    for alert in r.get("alerts") or []:
        out.append(f"<p style='color:#d62728'>⚠ {_e(alert)}</p>")
    srm = r["srm"]
    out.append("<h2>Sample ratio</h2>")
    out.append(_table(["arm", "share", "users", "expected users"],
                      [[_e(a), _num(r["shares"].get(a)), _num(srm["users"].get(a)), _num(srm["expected"].get(a))]
                       for a in arms]))
    out.append(f"<p>chi-square {_num(srm.get('chi2'))}, p = {_num(srm.get('p_value'))} (alarm below "
               f"{_num(srm['threshold'])}): <b>{'MISMATCH' if srm['mismatch'] else 'ok'}</b></p>")
    out.append("<h2>Metrics per arm</h2><p><small>Estimates with (1 - alpha) intervals; users are the unit "
               "(delta method; coverage: bootstrap over users).</small></p>")
    for m in METRICS:
        out.append(f"<div class='metric'><h3>{_e(m)} <small>{_e(LABELS[m])}</small></h3>"
                   f"{interval_plot(m, arms)}</div>")
    head = ["metric"] + [f"{a}" for a in arms] + [f"{t} − {default}" for t in treatments] + \
        [f"{t} relative" for t in treatments]
    rows = []
    for m in METRICS:
        row = [f"<code>{_e(m)}</code>"] + [f"{_num(arms[a][m]['value'])}<br><small>{_ci(arms[a][m].get('ci'))}"
                                           "</small>" for a in arms]
        for t in treatments:
            c = r["comparisons"][t][m]
            row.append(f"{_num(c['difference'])}<br><small>{_ci(c['ci'])}</small>")
        for t in treatments:
            c = r["comparisons"][t][m]
            ci = c.get("relative_ci")
            row.append(f"{_pct(c['relative'])}<br><small>{'[' + _pct(ci[0]) + ', ' + _pct(ci[1]) + ']' if ci else ''}"
                       "</small>")
        rows.append(row)
    out.append(_table(head, rows))
    out.append("<h2>Sequential test of the primary metric</h2><p><small>Mixture SPRT: the always-valid p-value "
               "may be read at every daily look without inflating false positives.</small></p>")
    seq_rows = []
    for t in treatments:
        s = r["comparisons"][t]["sequential_test"]
        seq_rows.append([_e(t), _num(s.get("difference")), _ci(s.get("interval")), _num(s.get("p_value")),
                         _num(s.get("alpha")), str(s.get("looks")), "yes" if s.get("significant") else "no"])
    out.append(_table(["arm", "difference", "always-valid interval", "p (always valid)", "alpha", "looks",
                       "significant"], seq_rows))
    out.append(trajectory_plot(r.get("trajectory") or [], treatments, min(
        (r["comparisons"][t]["sequential_test"].get("alpha", r["alpha"]) for t in treatments), default=r["alpha"])))
    g_rows = [[_e(t), f"<code>{_e(m)}</code>", _pct(g.get("relative_change")), _pct(g["tolerated_relative_change"]),
               _ci(g.get("interval")), _e(g["status"])]
              for t in treatments for m, g in r["comparisons"][t]["guardrails"].items()]
    out.append("<h2>Guardrails</h2>" + (_table(["arm", "metric", "relative change", "tolerated", "interval of the "
                                                "difference", "status"], g_rows) if g_rows else "<p>none</p>"))
    out.append("<h2>Offline evaluation of each arm</h2><p><small>The evaluation figures the variant's publication "
               "carries (as <code>GET /v1/variants</code> shows them).</small></p>")
    offline = r.get("offline") or {}
    keys = sorted({k for o in offline.values() for k, v in (o.get("evaluation") or {}).items()
                   if isinstance(v, int | float) and not isinstance(v, bool)})
    o_rows = []
    for a in arms:
        o = offline.get(a) or {}
        ev = o.get("evaluation") or {}
        o_rows.append([_e(a), f"<code>{_e(o.get('variant', ''))}</code>", _e(o.get("publication") or
                                                                          o.get("note") or "–")]
                      + [_num(ev.get(k)) for k in keys])
    out.append(_table(["arm", "variant", "publication"] + keys, o_rows))
    counts = r.get("counts", {})
    out.append("<h2>Events</h2>" + _table(["", "count"], [[_e(k), _e(v)] for k, v in counts.items()]))
    out.append(f"<p><small>{_e(r.get('feedback_outputs', 0))} feedback intervals read in "
               f"{_num(r.get('seconds'))} s. References: {_e(r.get('references'))}</small></p></body></html>")
    return "".join(out)

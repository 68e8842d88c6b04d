"""A self-contained HTML evaluation report: tables plus inline SVG charts (no plotting dependency).

Charts: the headline metrics per model (grouped bars), the distribution of top-k scores per model, and
popularity bias (where in the popularity ranking recommended items sit, next to what users actually
played in the test window).
"""

from __future__ import annotations

import html
from typing import Any

from skyrec.progress import format_percent

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
HEADLINE = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "coverage")


class _Html(str):
    """A table cell already written as HTML (a figure with its interval under it): not escaped again."""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, _Html):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    # a wide table scrolls inside its box; the page itself never scrolls sideways
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _with_ci(figures: dict[str, Any], metric: str) -> Any:
    """A figure with its interval under it (when the figures carry one)."""
    value = figures.get(metric)
    ci = _ci((figures.get("ci") or {}).get(metric))
    if not isinstance(value, float) or ci is None:
        return value
    return _Html(f"{value:.4f}<br><small>{ci}</small>")


def bar_chart(groups: list[str], series: dict[str, list[float | None]], title: str, width: int = 640,
              height: int = 260, intervals: dict[str, list[Any]] | None = None) -> str:
    """Grouped bar chart as an SVG string: one group per metric, one bar per model; ``intervals`` (per series,
    per group: [low, high] or None) draws each bar's confidence interval as a whisker."""
    pad_l, pad_b, pad_t = 50, 40, 30
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    highs = [ci[1] for cis in (intervals or {}).values() for ci in cis if _ci(ci) is not None]
    top = max([v for vals in series.values() for v in vals if v is not None] + highs + [1e-9]) * 1.1
    n_series = max(len(series), 1)
    gw = plot_w / max(len(groups), 1)
    bw = gw * 0.8 / n_series
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" stroke="#333"/>']
    for t in range(5):
        y = pad_t + plot_h - plot_h * t / 4
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{top * t / 4:.3g}</text>')
    for gi, group in enumerate(groups):
        x0 = pad_l + gi * gw + gw * 0.1
        parts.append(f'<text x="{pad_l + gi * gw + gw / 2:.1f}" y="{pad_t + plot_h + 16}" text-anchor="middle" '
                     f'font-size="11">{html.escape(group)}</text>')
        for si, (name, vals) in enumerate(series.items()):
            v = vals[gi] or 0.0
            h = plot_h * v / top
            ci = ((intervals or {}).get(name) or [None] * len(groups))[gi]
            shown = _fmt(vals[gi]) + (f" {_ci(ci)}" if _ci(ci) else "")
            parts.append(f'<rect x="{x0 + si * bw:.1f}" y="{pad_t + plot_h - h:.1f}" width="{bw * 0.95:.1f}" '
                         f'height="{h:.1f}" fill="{PALETTE[si % len(PALETTE)]}"><title>{html.escape(name)} '
                         f'{html.escape(group)}: {shown}</title></rect>')
            if _ci(ci) is not None:
                xc = x0 + si * bw + bw * 0.475
                y_lo, y_hi = (pad_t + plot_h - plot_h * ci[j] / top for j in (0, 1))
                parts.append(f'<path class="ci" d="M{xc - 3:.1f} {y_hi:.1f}h6M{xc:.1f} {y_hi:.1f}V{y_lo:.1f}'
                             f'M{xc - 3:.1f} {y_lo:.1f}h6" stroke="#222" fill="none"/>')
    parts.append(_legend(list(series), pad_l, height - 8))
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(hists: dict[str, dict[str, list]], title: str, xlabel: str, width: int = 640,
                    height: int = 240) -> str:
    """Overlaid step histograms (normalised to fractions) as an SVG string."""
    pad_l, pad_b, pad_t = 50, 44, 30
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    usable = {n: h for n, h in hists.items() if h.get("counts") and sum(h["counts"]) > 0}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>']
    if not usable:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    lo = min(h["edges"][0] for h in usable.values())
    hi = max(h["edges"][-1] for h in usable.values())
    span = (hi - lo) or 1.0
    fracs = {n: [c / sum(h["counts"]) for c in h["counts"]] for n, h in usable.items()}
    top = max(max(f) for f in fracs.values()) * 1.1 or 1.0
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" stroke="#333"/>')
    for t in range(5):
        x = pad_l + plot_w * t / 4
        parts.append(f'<text x="{x:.1f}" y="{pad_t + plot_h + 14}" text-anchor="middle" font-size="10">'
                     f'{lo + span * t / 4:.3g}</text>')
    parts.append(f'<text x="{pad_l + plot_w / 2}" y="{pad_t + plot_h + 28}" text-anchor="middle" '
                 f'font-size="11">{html.escape(xlabel)}</text>')
    for si, (name, h) in enumerate(usable.items()):
        pts = []
        for (e0, e1), f in zip(zip(h["edges"][:-1], h["edges"][1:], strict=True), fracs[name], strict=True):
            y = pad_t + plot_h - plot_h * f / top
            pts += [f"{pad_l + plot_w * (e0 - lo) / span:.1f},{y:.1f}", f"{pad_l + plot_w * (e1 - lo) / span:.1f},{y:.1f}"]
        parts.append(f'<polyline fill="none" stroke-width="2" stroke="{PALETTE[si % len(PALETTE)]}" '
                     f'points="{" ".join(pts)}"><title>{html.escape(name)}</title></polyline>')
    parts.append(_legend(list(usable), pad_l, height - 4))
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: list[str], x: float, y: float) -> str:
    out = []
    for i, name in enumerate(names):
        xi = x + i * 120
        out.append(f'<rect x="{xi}" y="{y - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{xi + 14}" y="{y}" font-size="11">{html.escape(name)}</text>')
    return "".join(out)


def _ci(ci: Any) -> str | None:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return None
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _split_text(evaluation: dict[str, Any]) -> str:
    split = evaluation.get("split") or {}
    if split.get("kind") == "per_user":
        size = f"{split.get('test_items')} items" if split.get("test_items") else \
            f"{split.get('test_fraction', 0):.0%} of their positives"
        tie = split.get("users_cut_in_a_tie")
        tie_text = (f"; for {tie} of them the latest training and earliest test positive were first played at "
                    "the same instant, and the order in the activity decided") if tie else ""
        return (f"Per-user temporal split: each user's latest {size} (first plays) are the test, "
                f"{split.get('users_tested')} users tested{tie_text}")
    return (f"Global time split: trained on events before {evaluation.get('cutoff')}, tested on the "
            f"{evaluation.get('holdout_days')} days after")


def _gate(evaluation: dict[str, Any]) -> list[str]:
    """The verdict first, in words, then the settings it was decided under (the comparisons it rests on are
    the paired comparisons' section)."""
    gate = evaluation.get("gate") or {}
    if not gate:
        return []
    if gate.get("overridden"):
        verdict = "published by an override of the failed gate" if not gate.get("passed") else "passed"
    elif gate.get("insufficient_evidence"):
        verdict = ("insufficient evidence: published with an alert" if gate.get("passed") else
                   "insufficient evidence: held")
    else:
        verdict = "passed" if gate.get("passed") else "failed: held, not published"
    settings = [("metric", gate.get("metric")), ("this model", gate.get("new")),
                ("users it rests on", gate.get("users")), ("fewest users to decide on (min_users)", gate.get("min_users")),
                ("below that (insufficient_evidence)", gate.get("policy")),
                ("must beat the baseline", None if gate.get("must_beat_baseline") is None else
                 "yes" if gate["must_beat_baseline"] else "no"),
                ("tolerance vs what is published or served", format_percent(gate["tolerance"])
                 if isinstance(gate.get("tolerance"), int | float) else None)]
    settings += [(k.replace("_", " "), gate[k]) for k in ("redecided_by", "redecided_at", "verdict") if gate.get(k)]
    rows = [{"": name, "value": value} for name, value in settings if value is not None]
    return [f"<h2>Quality gate: {html.escape(verdict)}</h2>",
            f"<p class='verdict'>{html.escape(str(gate.get('message') or ''))}</p>", _table(rows, ["", "value"])]


def _comparisons(evaluation: dict[str, Any]) -> list[str]:
    metric = evaluation.get("metric", "ndcg_at_k")
    comparisons = evaluation.get("comparisons") or {}
    rows: list[dict[str, Any]] = []
    flat: list[tuple[str, Any]] = []
    for against, c in comparisons.items():
        if against == "served":  # one per model that rails moving to this one serve now
            flat += [(f"served by {', '.join(x.get('rails') or ())}: {x.get('model')} {x.get('model_version')}", x)
                     for x in c or ()]
        else:
            flat.append((against, c))
    for against, c in flat:
        if c is None:
            rows.append({"against": against, "note": "none published yet"})
            continue
        if not c.get("comparable", True):
            rows.append({"against": against, "note": c.get("reason")})
            continue
        p = c.get(metric) or {}
        rows.append({"against": against if against != "published" else f"published {c.get('model_version')}",
                     "users": p.get("users"), "new": p.get("mean_a"), "other": p.get("mean_b"),
                     "factor": p.get("factor"), "difference": p.get("difference"), "difference_ci": _ci(p.get("ci")),
                     "relative": p.get("relative"), "p_value": p.get("p_value"), "note": c.get("method", "")})
    if not rows:
        return []
    return [f"<h2>Paired comparisons ({html.escape(metric)}, same users)</h2>",
            _table(rows, ["against", "users", "new", "other", "factor", "difference", "difference_ci", "relative",
                          "p_value", "note"])]


def _rules(evaluation: dict[str, Any]) -> list[str]:
    rules = evaluation.get("rules") or {}
    if not rules:
        return []
    rows = []
    notes = [f"<p><b>{html.escape(variant)}</b>: {html.escape(str(r['note']))}</p>" for variant, r in rules.items()
             if r.get("note")]
    for variant, r in rules.items():
        for stage, f in (r.get("stages") or {}).items():
            rows.append({"variant": variant, "stage": stage, "users": f.get("users"), "ndcg_at_k": f.get("ndcg_at_k"),
                         "ndcg_ci": _ci((f.get("ci") or {}).get("ndcg_at_k")), "recall_at_k": f.get("recall_at_k"),
                         "recall_ci": _ci((f.get("ci") or {}).get("recall_at_k"))})
    return ["<h2>After the business rules (per rail)</h2><p>Each stage adds one rule to the previous one: the "
            "model's raw list, minus played items, the rail's candidate filter, availability and age, the brand "
            "cap (what precompute publishes). Same users and relevance throughout.</p>",
            *notes, _table(rows, ["variant", "stage", "users", "ndcg_at_k", "ndcg_ci", "recall_at_k", "recall_ci"])]


def _cold_cell(cold: dict[str, Any]) -> Any:
    """The overall table's cold-start cell: the figure, or in a word why there is none."""
    if cold.get("cold_item_recall_at_k") is not None or not cold.get("not_scored"):
        return cold.get("cold_item_recall_at_k")
    return "no cold items" if str(cold["not_scored"]).startswith("no cold items") else "not scored"


def _cold_section(res: dict[str, Any], models: list[str], k: Any) -> list[str]:
    """Per model: the cold-start figure, the users it rests on (those with test plays on items without training
    plays) and, where there is no figure, why (``not_scored``)."""
    blocks = {m: res["models"][m].get("cold_start") or {} for m in models}
    cold_rnd = next(iter(blocks.values())).get("random_expectation") if blocks else None
    intro = (f"<h2>Cold-start items</h2><p>Recall@{k} of test plays on items with no training plays when only "
             f"those items are ranked ({_fmt(res.get('cold_items'))} such items; random ranking: "
             f"{_fmt(cold_rnd)}). Users: those with test plays on such items, whom the figure rests on.</p>")
    if not res.get("cold_items"):
        note = next((b["not_scored"] for b in blocks.values() if b.get("not_scored")),
                    "no cold items: every catalogue item has training plays")
        return [intro + f"<p>{html.escape(str(note))}.</p>"]
    rows = [{"model": m, "users": b.get("users"), "cold_item_recall_at_k": b.get("cold_item_recall_at_k"),
             "random_expectation": b.get("random_expectation"), "note": b.get("not_scored") or ""}
            for m, b in blocks.items()]
    return [intro, _table(rows, ["model", "users", "cold_item_recall_at_k", "random_expectation", "note"])]


def _sig(v: Any) -> str:
    """A parameter value: floats to 4 significant digits (search ranges span decades)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _search(evaluation: dict[str, Any]) -> list[str]:
    """The hyper-parameter search of the train step (``skyrec.evaluation.search``), when one ran."""
    search = evaluation.get("search")
    if not search:
        return []
    metric, k = search.get("metric", "ndcg_at_k"), search.get("k")
    best = search.get("best") or {}
    budget = search.get("budget") or {}
    val = search.get("validation") or {}
    params = list(search.get("space") or {})
    rows = [{"trial": t.get("number"), "state": t.get("state"),
             "": "best" if t.get("number") == best.get("number") else ("configured" if t.get("configured") else ""),
             metric: t.get("value"), "seconds": t.get("seconds"),
             **{p: _sig((t.get("params") or {}).get(p)) for p in params}, "error": t.get("error")}
            for t in search.get("trials") or []]
    limits = ", ".join(f"{name} {v}" for name, v in budget.items() if v is not None) or "none"
    repro = ("reproducible: same data and seed give the same trials" if search.get("reproducible") else
             "not reproducible: a time limit ended it (how many trials fit depends on the machine)")
    best_text = (", ".join(f"{html.escape(str(p))} = {html.escape(_sig(v))}" for p, v in (best.get("params") or {}).items())
                 if best else "none (no trial completed: the configured parameters were used)")
    return [f"<h2>Hyper-parameter search ({html.escape(str(search.get('model')))})</h2>",
            f"<p>{html.escape(str(search.get('sampler')))}; {html.escape(metric)} at k = {_fmt(k)} on a validation "
            f"split carved from the training part only ({html.escape(str(val.get('method')))}; "
            f"{_fmt(val.get('users'))} users, {_fmt(val.get('held_out_positives'))} held-out positives). Budget: "
            f"{html.escape(limits)}; stopped by {html.escape(str(search.get('stopped')))} after "
            f"{_fmt(search.get('seconds'))} s, {_fmt(search.get('n_complete'))} trials complete, "
            f"{_fmt(search.get('n_failed'))} failed; {html.escape(repro)}.</p>",
            f"<p><b>Best parameters</b> (trial {_fmt(best.get('number'))}, {html.escape(metric)} "
            f"{_fmt(best.get('value'))}; configured parameters: {_fmt(search.get('configured_value'))}): "
            f"{best_text}. The evaluation above measures the model fit with them.</p>",
            *(f"<p class='note'>{html.escape(str(search['note']))}</p>" for _ in (1,) if search.get("note")),
            *(f"<p>Chosen, but without effect here: {html.escape(', '.join(f'{p} ({why})' for p, why in na.items()))}"
              ".</p>" for na in (search.get("not_applying") or {},) if na),
            _table(rows, ["trial", "", "state", metric, "seconds", *params, "error"])]


def render(evaluation: dict[str, Any]) -> str:
    """The HTML report of one evaluation (the dict written to ``evaluation.json``)."""
    res = evaluation["results"]
    k = res["k"]
    models = list(res["models"])
    title = f"skyrec evaluation: {evaluation.get('model')} {evaluation.get('model_version', '')}"
    def figures(f: dict[str, Any]) -> dict[str, Any]:  # each headline metric with its interval under it
        return {**f, **{c: _with_ci(f, c) for c in HEADLINE}}

    overall = [{"model": m, **figures(res["models"][m]["overall"]),
                "cold_item_recall_at_k": _cold_cell(res["models"][m]["cold_start"])} for m in models]
    cols = ["model", "users", *HEADLINE, "novelty", "popularity_percentile", "cold_item_recall_at_k"]
    boot = res.get("bootstrap") or {}
    tested = (evaluation.get("split") or {}).get("users_tested")
    evaluated = ("" if tested == res["users_evaluated"] else
                 f"; {res['users_evaluated']} test users evaluated")  # fewer: sampled (training.eval_max_users)
    sections = [f"<h1>{html.escape(title)}</h1>",
                f"<p>{html.escape(_split_text(evaluation))}{evaluated}; k = {k}; "
                f"{res['n_items']} items ({res['cold_items']} cold). Intervals: {format_percent(boot.get('confidence'))} "
                f"confidence, users resampled {html.escape(str(boot.get('resamples')))} times "
                f"(seed {html.escape(str(boot.get('seed')))}).</p>",
                *_gate(evaluation),
                "<h2>Overall</h2>", _table(overall, cols),
                bar_chart([c.replace("_at_k", f"@{k}") for c in HEADLINE],
                          {m: [res["models"][m]["overall"][c] for c in HEADLINE] for m in models},
                          f"Metrics at k={k} per model",
                          intervals={m: [(res["models"][m]["overall"].get("ci") or {}).get(c) for c in HEADLINE]
                                     for m in models})]
    variants = sorted({v for m in models for v in res["models"][m]["variants"]})
    if variants:
        sections.append("<h2>Per variant (candidate set)</h2>")
        rows = [{"variant": v, "model": m, "candidates": res["candidate_items"].get(v),
                 **figures(res["models"][m]["variants"][v])} for v in variants for m in models]
        sections.append(_table(rows, ["variant", "model", "candidates", "users", *HEADLINE]))
        sections.append(bar_chart(variants, {m: [res["models"][m]["variants"][v]["ndcg_at_k"] for v in variants]
                                             for m in models}, f"NDCG@{k} per variant",
                                  intervals={m: [(res["models"][m]["variants"][v].get("ci") or {}).get("ndcg_at_k")
                                                 for v in variants] for m in models}))
    sections.extend(_comparisons(evaluation))
    sections.extend(_rules(evaluation))
    sections.extend(_search(evaluation))
    sections.extend(_cold_section(res, models, k))
    truth = evaluation.get("truth")
    if truth:
        sections.append(f"<h2>Planted truth</h2><p>Recall@{truth['k']} of the generator's planted next items "
                        f"({truth['users']} users), published artefact vs baseline fit on the same data.</p>"
                        + _table([truth], sorted(truth)))
    dist = res["distributions"]
    sections.append("<h2>Score distributions</h2><p>Each model scores on its own scale (a factor product, a "
                    "similarity sum, a play count): compare the shapes, not the positions.</p>")
    sections.append(histogram_chart({m: dist[m]["top_k_scores"] for m in models if m in dist},
                                    f"Top-{k} scores", "score"))
    sections.append("<h2>Popularity bias</h2>")
    pop = {m: dist[m]["recommended_popularity_percentile"] for m in models if m in dist}
    if "_test_plays" in dist:
        pop["test plays"] = dist["_test_plays"]["recommended_popularity_percentile"]
    sections.append(histogram_chart(pop, "Popularity percentile of recommended items", "popularity percentile"))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
             ".wide{overflow-x:auto;max-width:100%}td small{color:#555;white-space:nowrap}svg{max-width:100%;height:auto}"
             ".verdict{font-size:1.05em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")

// skyrec explorer: pick a variant and a user, see recent plays, recommendations and the published model.
// Plain DOM (textContent only: nothing from the API is parsed as HTML), no build step.
"use strict";

const $ = (id) => document.getElementById(id);

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const msg = body && body.message ? body.message : resp.status + " " + resp.statusText;
    throw new Error(msg);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function setStatus(text) { $("status").textContent = text || ""; }

function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " days";
}

function formatTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

let variants = [];

// A figure with its confidence interval: "0.1234 [0.1100, 0.1350]".
function withCi(value, ci) {
  if (value === null || value === undefined) return "–";
  const f = (x) => (+x).toFixed(4);
  return Array.isArray(ci) && ci[0] !== null && ci[1] !== null ? `${f(value)} [${f(ci[0])}, ${f(ci[1])}]` : f(value);
}

// The published evaluation as rows: headline figures with intervals, the users and protocol behind them,
// the gate's verdict, and the rail's figures after each business rule (the cost of each rule).
function evaluationRows(ev) {
  const rows = [];
  if (!ev || !Object.keys(ev).length) return rows;
  const ci = ev.ci || {};
  for (const m of ["ndcg_at_k", "recall_at_k", "precision_at_k", "map_at_k"]) {
    if (m in ev) rows.push([m.replace("_at_k", "@k"), withCi(ev[m], ci[m])]);
  }
  if ("coverage" in ev) rows.push(["coverage", withCi(ev.coverage)]);
  if (ev.users !== undefined) rows.push(["test users", ev.users]);
  if (ev.baseline !== undefined && ev.baseline !== null)
    rows.push([`baseline (${ev.baseline_model || "baseline"}) ${ev.metric || ""}`, withCi(ev.baseline, ev.baseline_ci)]);
  const split = (ev.protocol || {}).split;
  if (split) rows.push(["split", Object.entries(split).map(([k, x]) => `${k}=${x}`).join(", ")]);
  if (ev.gate && ev.gate.message) rows.push([ev.gate.insufficient_evidence ? "gate (insufficient evidence)" : "gate", ev.gate.message]);
  const rules = ev.rules || {};
  for (const stage of ["model", "exclude_played", "candidates", "available", "served"]) {
    const f = rules[stage];
    if (!f) continue;
    const m = ev.metric || "ndcg_at_k";
    rows.push([`after rules: ${stage.replace("_", " ")}`, withCi(f[m], f.ci)]);
  }
  return rows;
}

function showPublication(name) {
  const v = variants.find((x) => x.variant === name);
  const dl = $("publication");
  dl.replaceChildren();
  const tbody = $("evaluation").querySelector("tbody");
  tbody.replaceChildren();
  $("report").replaceChildren();
  if (!v || !v.published) { dl.append(el("dt", {}, "status"), el("dd", {}, "nothing published yet")); return; }
  const rows = [["publication", v.publication], ["model", v.model], ["model version", v.model_version],
    ["published at", formatTime(v.published_at)], ["age", formatAge(v.age_seconds)], ["users", v.users], ["items", v.items]];
  for (const [k, val] of rows) {
    if (val === null || val === undefined || val === "") continue;
    dl.append(el("dt", {}, k), el("dd", {}, val));
  }
  for (const [k, val] of evaluationRows(v.evaluation || {})) tbody.append(el("tr", {}, el("td", {}, k), el("td", {}, val)));
  if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { class: "note" }, "no evaluation figures published")));
  if (v.report_url) $("report").append(el("a", { href: v.report_url, id: "report-link", target: "_blank", rel: "noopener" }, "Latest training report"));
}

function itemNode(item, extra) {
  const genres = el("span", {});
  for (const g of item.genres || []) genres.append(el("span", { class: "genre" }, g));
  return el("li", { "data-item": item.id },
    el("div", { class: "title" }, item.title || item.id),
    el("div", { class: "meta" }, [item.brand, extra].filter(Boolean).join(" · ")),
    genres);
}

async function load(variant, user) {
  setStatus("");
  showPublication(variant);
  const params = new URLSearchParams({ variant, user });
  history.replaceState(null, "", "?" + params.toString());
  document.body.dataset.state = "loading";
  const enc = encodeURIComponent;
  try {
    const [recs, plays] = await Promise.all([
      getJSON(`/v1/recommendations/${enc(variant)}/${enc(user)}?limit=20`),
      getJSON(`/v1/users/${enc(user)}/history?limit=20&variant=${enc(variant)}`),
    ]);
    const ol = $("recs");
    ol.replaceChildren(...recs.items.map((it) => itemNode(it, it.score == null ? "from the rail's popular list" : "score " + it.score.toFixed(3))));
    const badge = $("source");
    badge.textContent = recs.source + (recs.padded ? ` (+${recs.padded} padded)` : "") + (recs.stale ? " · stale" : "");
    badge.className = "badge " + recs.source;
    $("plays").replaceChildren(...plays.plays.map((p) => itemNode(p, p.played_at)));
    $("plays-note").textContent = plays.note || (plays.plays.length ? "" : "no plays");
    document.body.dataset.state = "loaded";
  } catch (err) {
    setStatus(err.message);
    document.body.dataset.state = "error";
  }
}

async function randomUser(variant) {
  const r = await getJSON(`/v1/users/random?variant=${encodeURIComponent(variant)}`);
  return r.user_id;
}

async function main() {
  const params = new URLSearchParams(location.search);
  try {
    variants = (await getJSON("/v1/variants")).variants;
  } catch (err) {
    setStatus("cannot list variants: " + err.message);
    document.body.dataset.state = "error";
    return;
  }
  const select = $("variant");
  for (const v of variants) select.append(el("option", { value: v.variant }, v.variant + (v.published ? "" : " (not published)")));
  const wanted = params.get("variant");
  if (wanted && variants.some((v) => v.variant === wanted)) select.value = wanted;
  else { const first = variants.find((v) => v.published); if (first) select.value = first.variant; }
  select.addEventListener("change", () => showPublication(select.value));
  showPublication(select.value);

  $("pick").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = $("user").value.trim();
    if (!user) { setStatus("enter a user id, or pick a random one"); return; }
    load(select.value, user);
  });
  $("random").addEventListener("click", async () => {
    try { $("user").value = await randomUser(select.value); load(select.value, $("user").value); }
    catch (err) { setStatus(err.message); }
  });

  let user = params.get("user");
  if (!user && params.get("random") !== null) {
    try { user = await randomUser(select.value); } catch (err) { setStatus(err.message); }
  }
  if (user) { $("user").value = user; await load(select.value, user); }
  else document.body.dataset.state = "ready";
}

main();

// skyrec explorer: one user's recent plays and recommendations on one rail, or two rails side by side, with
// what each rail serves (publication, evaluation figures). Plain DOM (textContent only: nothing from the API
// is parsed as HTML), no build step.
//
// Page states (body[data-state]): "loading", "loaded" (a user shown), "empty" (nothing published: a prompt),
// "unavailable" (the API cannot read Redis), "error" (any other failure, its message shown).
"use strict";

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const msg = body && body.message ? body.message : resp.status + " " + resp.statusText;
    throw new ApiError(resp.status, body && body.error, msg);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// The message under the header: a guide, a prompt or an error. Hidden when there is nothing to say.
function say(kind, ...parts) {
  const box = $("message");
  box.replaceChildren(...parts.map((p) => (p instanceof Node ? p : document.createTextNode(String(p)))));
  box.className = kind || "";
  box.hidden = !parts.length;
}

// ---- dates for people: "23 Nov 2026, 17:00 (2 hours ago)", in the reader's time zone ---------------------

const DATE = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric",
  hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

function ago(seconds) {
  const s = Math.max(0, seconds);
  if (s < 60) return "just now";
  const steps = [["minute", 60], ["hour", 3600], ["day", 86400], ["month", 30 * 86400], ["year", 365 * 86400]];
  let unit = steps[0];
  for (const step of steps) if (s >= step[1]) unit = step;
  return RELATIVE.format(-Math.round(s / unit[1]), unit[0]);
}

// A <time> element: readable text, the exact instant in its datetime attribute (machine-readable only).
function timeNode(iso, ageSeconds) {
  const d = new Date(iso);
  if (iso === null || iso === undefined || isNaN(d)) return document.createTextNode("unknown time");
  const age = ageSeconds !== null && ageSeconds !== undefined ? ageSeconds : (Date.now() - d.getTime()) / 1000;
  return el("time", { datetime: d.toISOString() }, `${DATE.format(d)} (${ago(age)})`);
}

// ---- evaluation figures of a rail ---------------------------------------------------------------------

// A figure with its confidence interval: "0.1234 [0.1100, 0.1350]".
function withCi(value, ci) {
  if (value === null || value === undefined) return "–";
  const f = (x) => (+x).toFixed(4);
  return Array.isArray(ci) && ci[0] !== null && ci[1] !== null ? `${f(value)} [${f(ci[0])}, ${f(ci[1])}]` : f(value);
}

const METRIC_NAMES = { ndcg_at_k: "NDCG@k", recall_at_k: "recall@k", precision_at_k: "precision@k", map_at_k: "MAP@k" };

// The published evaluation as rows: headline figures with intervals, the users and protocol behind them,
// the gate's verdict, and the rail's figures after each business rule (the cost of each rule).
function evaluationRows(ev) {
  const rows = [];
  if (!ev || !Object.keys(ev).length) return rows;
  const ci = ev.ci || {};
  for (const m of Object.keys(METRIC_NAMES)) {
    if (m in ev) rows.push([METRIC_NAMES[m], withCi(ev[m], ci[m])]);
  }
  if ("coverage" in ev) rows.push(["coverage", withCi(ev.coverage)]);
  if (ev.users !== undefined) rows.push(["test users", ev.users]);
  const metric = ev.metric || "ndcg_at_k";
  if (ev.baseline !== undefined && ev.baseline !== null)
    rows.push([`baseline (${ev.baseline_model || "baseline"}) ${METRIC_NAMES[metric] || metric}`,
      withCi(ev.baseline, ev.baseline_ci)]);
  const split = (ev.protocol || {}).split;
  if (split) rows.push(["split", Object.entries(split).map(([k, x]) => `${k}=${x}`).join(", ")]);
  if (ev.gate && ev.gate.message) rows.push([ev.gate.insufficient_evidence ? "gate (insufficient evidence)" : "gate", ev.gate.message]);
  const rules = ev.rules || {};
  if (rules.note) rows.push(["after rules", rules.note]);  // e.g. no candidates: its zeros are not a score
  for (const stage of ["model", "exclude_played", "candidates", "available", "served"]) {
    const f = rules[stage];
    if (!f) continue;
    rows.push([`${METRIC_NAMES[metric] || metric} after rules: ${stage.replace("_", " ")}`, withCi(f[metric], f.ci)]);
  }
  return rows;
}

// The rail's headline figure: what this rail serves (its figure after every business rule, ``rules.served``)
// when the evaluation has it, else the model's own figure (the same for every rail of the model), each said.
function headline(ev) {
  const metric = ev.metric || "ndcg_at_k";
  const name = METRIC_NAMES[metric] || metric;
  const served = (ev.rules || {}).served;
  if (served && typeof served[metric] === "number")
    return { figure: "served", text: `${name} as served on this rail ${withCi(served[metric], served.ci)}`,
      title: "this rail's figure after its business rules (what its users receive)" };
  if (typeof ev[metric] === "number")
    return { figure: "model", text: `${name} of the model ${withCi(ev[metric], (ev.ci || {})[metric])}`,
      title: "the model's figure before this rail's business rules (the same for every rail of the model)" };
  return null;
}

// ---- items ------------------------------------------------------------------------------------------------

// Actions on each recommended item: {label, href(item, variant)}, rendered as links under the item (class
// "actions"). "More like this" opens the item's similar items on the same rail (GET /v1/items/{id}/similar),
// keeping the user being explored so that the page can lead back.
// An action's optional ``when(variant)`` says whether it applies to the rail ("more like this" only where
// the publication has similar lists: /v1/variants names them).
const ITEM_ACTIONS = [
  { label: "More like this", when: (variant) => {
    const v = (variants || []).find((x) => x.variant === variant);
    return !v || !!v.similar;
  }, href: (item, variant) => {
    const q = new URLSearchParams({ variant, item: item.id });
    const user = $("user").value.trim();
    if (user) q.set("user", user);
    return "?" + q.toString();
  } },
];

function itemNode(item, meta, variant) {
  const line = el("div", { class: "meta" }, ...meta);
  for (const g of item.genres || []) line.append(el("span", { class: "genre" }, g));
  const li = el("li", { "data-item": item.id }, el("div", { class: "title" }, item.title || item.id), line);
  const actions = variant ? ITEM_ACTIONS.filter((a) => !a.when || a.when(variant)) : [];
  if (actions.length) {
    li.append(el("div", { class: "actions" },
      ...actions.map((a) => el("a", { href: a.href(item, variant) }, a.label))));
  }
  return li;
}

function joined(parts) {
  const out = [];
  for (const p of parts.filter((x) => x !== null && x !== undefined && x !== "")) {
    if (out.length) out.push(" · ");
    out.push(p);
  }
  return out;
}

// ---- rails --------------------------------------------------------------------------------------------------

let variants = [];

function railPanel(index, name) {
  const node = $("rail-template").content.firstElementChild.cloneNode(true);
  node.id = `rail-${index}`;
  node.dataset.variant = name;
  node.querySelector(".rail-name").textContent = name;
  node.querySelector(".recs").id = `recs-${index}`;
  showPublication(node, variants.find((x) => x.variant === name));
  return node;
}

function showPublication(node, v) {
  const line = node.querySelector(".published");
  const tbody = node.querySelector(".evaluation tbody");
  if (!v || !v.published) {
    line.textContent = "Nothing is published for this rail yet.";
    tbody.append(el("tr", {}, el("td", { class: "note" }, "no evaluation figures")));
    node.querySelector(".headline").textContent = "(nothing published)";
    return;
  }
  line.replaceChildren(...joined([
    el("span", {}, "Published ", timeNode(v.published_at, v.age_seconds)),
    v.model ? `model ${v.model}${v.model_version ? " " + v.model_version : ""}` : null,
    typeof v.users === "number" ? `${v.users.toLocaleString("en")} users` : null,
    typeof v.items === "number" ? `${v.items.toLocaleString("en")} items` : null,
  ]));
  line.append(el("span", { class: "publication-id" }, ` · ${v.publication}`));
  if (v.stale) line.append(el("span", { class: "badge stale" }, "stale"));
  const rows = evaluationRows(v.evaluation || {});
  for (const [k, val] of rows) tbody.append(el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, val)));
  if (!rows.length) tbody.append(el("tr", {}, el("td", { class: "note" }, "no evaluation figures published")));
  const head = headline(v.evaluation || {});
  const headNode = node.querySelector(".headline");
  headNode.textContent = head ? head.text : rows.length ? `${rows[0][0]} ${rows[0][1]}` : "(none published)";
  headNode.dataset.figure = head ? head.figure : rows.length ? "model" : "none";
  if (head) headNode.title = head.title;
  if (v.report_url)
    node.querySelector(".report").append(el("a", { href: v.report_url, class: "report-link", target: "_blank", rel: "noopener" }, "Latest training report"));
}

function showRecommendations(node, recs, user) {
  node.dataset.source = recs.source;
  const badge = node.querySelector(".source");
  badge.textContent = recs.source === "personalised" ? "personalised" : "not personalised";
  badge.className = "badge source " + recs.source;
  if (recs.stale && !node.querySelector("h2 .stale"))
    node.querySelector("h2").append(el("span", { class: "badge stale", title: "Redis unreachable" }, "stale"));
  const note = node.querySelector(".rail-note");
  const own = recs.items.filter((it) => it.origin === "personalised").length;
  const notes = [];
  if (recs.source === "fallback")
    notes.push(`No precomputed list for ${user} in this publication (a new or unknown user): this is the rail's popular list.`);
  else if (own < recs.items.length)
    notes.push(`${own} of ${recs.items.length} items are ${user}'s own; the rest come from the rail's popular list.`);
  if (recs.stale) notes.push("Redis is unreachable: this is the API's last answer from the same publication.");
  note.textContent = notes.join(" ");
  const ol = node.querySelector(".recs");
  ol.replaceChildren();
  for (const it of recs.items) {
    const popular = it.origin === "fallback";
    const score = it.score === null || it.score === undefined ? null
      : (popular ? "popularity " : "score ") + it.score.toFixed(3);
    const li = itemNode(it, joined([it.brand, popular && recs.source === "personalised" ? el("span", { class: "tag" }, "popular on this rail") : null, score]), recs.variant);
    if (popular) li.classList.add("popular");
    ol.append(li);
  }
  if (!recs.items.length) note.textContent = (note.textContent + " No items.").trim();
}

function showRailError(node, err) {
  node.dataset.source = "error";
  const badge = node.querySelector(".source");
  badge.textContent = "no answer";
  badge.className = "badge source error";
  node.querySelector(".rail-note").textContent = err.message;
  node.querySelector(".recs").replaceChildren();
}

// ---- "more like this" and "because you played X" ---------------------------------------------------------

// Items of an item-to-item list (model scores, best first), each with its own "More like this" action.
function similarItems(ol, items, variant) {
  ol.replaceChildren(...items.map((it) => itemNode(it, joined([it.brand, "score " + it.score.toFixed(3)]), variant)));
}

// The because-you-played rail of the first rail: shown only when the user has a qualifying play.
function showBecause(answer) {
  const old = $("because-panel");
  if (old) old.remove();
  if (!answer || !answer.seed || !answer.items.length) return;
  const seed = answer.seed;
  const panel = el("section", { id: "because-panel", class: "panel because", "data-seed": seed.id },
    el("h2", {}, "Because you played ", el("span", { class: "seed-title" }, `“${seed.title || seed.id}”`)),
    el("p", { class: "published" }, ...joined([`${answer.rail}`, seed.brand,
      el("span", {}, "played ", timeNode(seed.played_at)), seed.available === false ? "no longer available" : null])),
    el("ol", { class: "items", id: "because-items" }));
  similarItems(panel.querySelector("ol"), answer.items, answer.rail);
  $("board").append(panel);
}

// The "more like this" view: ?variant=RAIL&item=ID (and the user being explored, to go back to).
async function showSimilar(item, variant, user) {
  document.body.dataset.state = "loading";
  document.body.dataset.view = "similar";
  const board = $("board");
  board.querySelectorAll(".rail, #because-panel, #similar-panel").forEach((n) => n.remove());
  board.dataset.rails = "1";
  const back = user ? el("a", { href: "?" + new URLSearchParams({ variant, user }).toString(), id: "back" },
    `back to ${user}`) : null;
  const panel = el("section", { id: "similar-panel", class: "panel similar", "data-item": item },
    el("h2", {}, "More like ", el("span", { class: "seed-title" }, `“${item}”`)),
    el("p", { class: "published" }), el("p", { class: "note similar-note" }), el("ol", { class: "items", id: "similar-items" }));
  board.append(panel);
  try {
    const ans = await getJSON(`/v1/items/${encodeURIComponent(item)}/similar?rail=${encodeURIComponent(variant)}&limit=20`);
    panel.querySelector(".seed-title").textContent = `“${ans.item.title || ans.item.id}”`;
    panel.querySelector(".published").replaceChildren(...joined([ans.item.brand,
      ans.item.available === false ? "no longer available" : null,
      `the most similar items on ${ans.rail}`, el("span", { class: "publication-id" }, ans.publication), back]));
    similarItems($("similar-items"), ans.items, variant);
    if (!ans.items.length) panel.querySelector(".similar-note").textContent = "Nothing on this rail is like this item right now.";
    say("");
  } catch (err) {
    if (isUnavailable(err)) { showUnavailable(err); return; }
    panel.querySelector(".similar-note").textContent = err.message;
    if (back) panel.querySelector(".published").replaceChildren(back);
  }
  document.body.dataset.state = "loaded";
}

// ---- loading a user ---------------------------------------------------------------------------------------

function chosenRails() {
  const a = $("variant").value;
  const b = $("compare").value;
  return b && b !== a ? [a, b] : [a];
}

// 503 means "retry later"; of those, only "not_published" (a rail with nothing published yet) is not about Redis
function isUnavailable(err) { return err instanceof ApiError && err.status === 503 && err.code !== "not_published"; }

function showUnavailable(err) {
  document.body.dataset.state = "unavailable";
  const retry = el("button", { type: "button", id: "retry" }, "Retry");
  retry.addEventListener("click", () => location.reload());
  say("error", el("strong", {}, "The recommendation store is unreachable. "),
    `The API cannot read Redis (${err.message}). Recommendations come back as soon as Redis answers again. `, retry);
}

async function load(user, guide) {
  const rails = chosenRails();
  const params = new URLSearchParams({ variant: rails[0], user });
  if (rails[1]) params.set("compare", rails[1]);
  history.replaceState(null, "", "?" + params.toString());
  document.body.dataset.state = "loading";
  delete document.body.dataset.view;
  const board = $("board");
  board.querySelectorAll(".rail, #because-panel, #similar-panel").forEach((n) => n.remove());
  board.dataset.rails = String(rails.length);
  const panels = rails.map((name, i) => railPanel(i, name));
  board.append(...panels);
  const enc = encodeURIComponent;
  const answers = await Promise.allSettled([
    getJSON(`/v1/users/${enc(user)}/history?limit=20&variant=${enc(rails[0])}`),
    ...rails.map((name) => getJSON(`/v1/recommendations/${enc(name)}/${enc(user)}?limit=20`)),
  ]);
  // "because you played X" on the first rail: optional (a rail published without similar lists has none)
  const because = await getJSON(`/v1/because-you-played/${enc(rails[0])}/${enc(user)}?limit=10`).catch(() => null);
  const failed = answers.filter((a) => a.status === "rejected").map((a) => a.reason);
  if (failed.some(isUnavailable) && answers.slice(1).every((a) => a.status === "rejected")) {
    panels.forEach((p, i) => showRailError(p, answers[i + 1].reason));
    showUnavailable(failed.find(isUnavailable));
    return;
  }
  const [plays, ...recs] = answers;
  $("plays-panel").querySelector("h2").textContent = `Recent plays of ${user}`;
  if (plays.status === "fulfilled") {
    $("plays").replaceChildren(...plays.value.plays.map((p) =>  // each with "more like this" on the first rail
      itemNode(p, joined([p.brand, el("span", {}, "played ", timeNode(p.played_at))]), rails[0])));
    $("plays-note").textContent = plays.value.note || (plays.value.plays.length ? "" : "no plays");
  } else {
    $("plays").replaceChildren();
    $("plays-note").textContent = "plays unavailable: " + plays.reason.message;
  }
  recs.forEach((r, i) => (r.status === "fulfilled" ? showRecommendations(panels[i], r.value, user) : showRailError(panels[i], r.reason)));
  showBecause(because);
  if (failed.some(isUnavailable))
    say("error", "Redis is unreachable: the API shows the last answers it kept, marked stale; "
      + "what it did not keep comes back when Redis answers again.");
  else if (guide) say("guide", guide);
  else if (failed.length) say("error", failed[0].message);
  else say("");
  document.body.dataset.state = "loaded";
}

async function randomUser(variant) {
  return (await getJSON(`/v1/users/random?variant=${encodeURIComponent(variant)}`)).user_id;
}

async function showRandom(guide) {
  const rail = $("variant").value;
  try {
    const user = await randomUser(rail);
    $("user").value = user;
    await load(user, guide ? `A random user of ${rail}'s published set. Type another user id, press Random user, `
      + "or pick a second rail to compare the two side by side." : null);
  } catch (err) {
    if (isUnavailable(err)) { showUnavailable(err); return; }
    document.body.dataset.state = "empty";
    say("guide", `No user to show for ${rail} (${err.message}). Type a user id above, or pick another rail.`);
  }
}

// Experiments on the rails and their latest readout report (GET /v1/experiments): links in the header.
async function showExperiments() {
  let list = [];
  try { list = (await getJSON("/v1/experiments")).experiments; } catch (err) { return; }
  const nav = document.querySelector("header nav");
  if (!nav) return;
  for (const x of list) {
    const r = x.latest_readout;
    const label = `experiment ${x.name} on ${x.rail}` + (r && r.decision ? `: ${r.decision.status}` : " (no readout yet)");
    nav.append(" · ", r ? el("a", { href: r.report_url, class: "experiment-link", target: "_blank", rel: "noopener" }, label)
      : el("span", { class: "experiment-link" }, label));
  }
}

async function main() {
  const params = new URLSearchParams(location.search);
  try {
    variants = (await getJSON("/v1/variants")).variants;
  } catch (err) {
    if (isUnavailable(err)) showUnavailable(err);
    else { document.body.dataset.state = "error"; say("error", "Cannot list the rails: " + err.message); }
    return;
  }
  const select = $("variant");
  const compare = $("compare");
  for (const v of variants) {
    const label = v.variant + (v.published ? "" : " (not published)");
    select.append(el("option", { value: v.variant }, label));
    compare.append(el("option", { value: v.variant }, label));
  }
  const known = (name) => name && variants.some((v) => v.variant === name);
  const wanted = params.get("variant");
  if (known(wanted)) select.value = wanted;
  else { const first = variants.find((v) => v.published); if (first) select.value = first.variant; }
  if (known(params.get("compare"))) compare.value = params.get("compare");
  showExperiments();  // not awaited: the rails do not wait for it

  const reload = () => { const user = $("user").value.trim(); if (user) load(user); };
  select.addEventListener("change", reload);
  compare.addEventListener("change", reload);
  $("pick").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = $("user").value.trim();
    if (!user) { say("guide", "Type a user id, or press Random user."); return; }
    load(user);
  });
  $("random").addEventListener("click", () => showRandom(false));

  if (!variants.some((v) => v.published)) {
    document.body.dataset.state = "empty";
    say("guide", "Nothing is published yet. Run ", el("code", {}, "make demo"),
      " (or the precompute DAGs), then reload this page.");
    return;
  }
  const user = params.get("user");
  if (user) $("user").value = user;
  if (params.get("item")) await showSimilar(params.get("item"), select.value, user);
  else if (user) await load(user);
  else await showRandom(true);  // the first view: a real user rather than empty panels
}

main();

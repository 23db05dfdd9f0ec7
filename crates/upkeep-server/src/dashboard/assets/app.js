// upkeep dashboard: one page, no build step. Data comes from the API with the
// session cookie; changes carry the session's CSRF token. Live over server-sent events.
"use strict";

const state = { csrf: null, accounts: new Map(), banners: new Map() };
const $ = (sel, root = document) => root.querySelector(sel);

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  return { ok: resp.ok, status: resp.status, data };
}

function hoursLeft(acc) {
  if (!acc.data.token) return -1;
  const elapsed = (Date.now() - acc.fetchedAt) / 1000;
  return (acc.data.token.seconds_left - elapsed) / 3600;
}

function badgeOf(acc) {
  const h = hoursLeft(acc);
  if (acc.data.state === "refused") return { text: "REFUSED", cls: "red" };
  if (!acc.data.token || h <= 0) return { text: "EXPIRED", cls: "red" };
  const text = "Token: " + h.toFixed(1) + "h";
  if (h > 3) return { text, cls: "green" };
  if (h >= 1) return { text, cls: "orange" };
  return { text, cls: "red" };
}

function setBadge(el, b, id) {
  el.textContent = (id ? id + " " : "") + b.text;
  el.className = "badge " + b.cls;
  el.dataset.state = b.cls;
}

function banner(key, level, text, actions) {
  let el = state.banners.get(key);
  if (!el) {
    el = document.createElement("div");
    el.dataset.key = key;
    $("#banners").appendChild(el);
    state.banners.set(key, el);
  }
  // Rebuilt only when it says something new (buttons stay put under the pointer).
  if (el.dataset.level === level && el.dataset.text === text) return;
  el.className = "banner " + level;
  el.dataset.level = level;
  el.dataset.text = text;
  el.replaceChildren();
  const span = document.createElement("span");
  span.textContent = text;
  el.appendChild(span);
  const row = document.createElement("span");
  row.className = "row";
  for (const [label, fn] of actions) {
    const b = document.createElement("button");
    b.textContent = label;
    b.addEventListener("click", fn);
    row.appendChild(b);
  }
  el.appendChild(row);
  if (level !== "critical" && !el.dataset.timer) {
    // Non-critical banners dismiss themselves.
    el.dataset.timer = "1";
    setTimeout(() => { removeBanner(key); }, 10000);
  }
}

function removeBanner(key) {
  const el = state.banners.get(key);
  if (el) { el.remove(); state.banners.delete(key); }
}

function updateBanners(id, acc) {
  const h = hoursLeft(acc);
  const expired = !acc.data.token || h <= 0 || acc.data.state === "refused";
  if (expired) {
    removeBanner(id + ":warning");
    banner(id + ":critical", "critical",
      "Account " + id + ": the token has EXPIRED" + (acc.data.state === "refused" ? " (Upstox refused it)" : "") + ".",
      [["Renew now", () => renew(id)], ["Log in with Upstox", () => login(id)]]);
  } else {
    removeBanner(id + ":critical");
    if (h < 1) {
      banner(id + ":warning", "warning",
        "Account " + id + ": the token expires in " + Math.max(1, Math.round(h * 60)) + " min.",
        [["Renew now", () => renew(id)]]);
    }
  }
}

function text(v) { return v === null || v === undefined || v === "" ? "-" : String(v); }

function render(id) {
  const acc = state.accounts.get(id);
  if (!acc) return;
  let card = document.getElementById("account-" + id);
  if (!card) {
    card = $("#account-template").content.firstElementChild.cloneNode(true);
    card.id = "account-" + id;
    card.dataset.account = id;
    $(".renew", card).addEventListener("click", () => renew(id));
    $(".login", card).addEventListener("click", () => login(id));
    $(".import", card).addEventListener("click", () => { $(".import-form", card).hidden = !$(".import-form", card).hidden; });
    $(".import-form", card).addEventListener("submit", (e) => { e.preventDefault(); importToken(id, card); });
    $("#accounts").appendChild(card);
    const top = document.createElement("span");
    top.id = "top-badge-" + id;
    top.className = "badge";
    $("#badges").appendChild(top);
  }
  const d = acc.data;
  $(".name", card).textContent = id;
  $(".env", card).textContent = text(d.env);
  $(".kind", card).textContent = d.token ? d.token.kind + " (" + d.state + ")" : "none";
  $(".expires", card).textContent = d.token ? d.token.expires_at : "-";
  $(".validated", card).textContent = d.api_validated === null ? "not checked yet" : (d.api_validated ? "yes" : "NO");
  $(".last-renewal", card).textContent = d.last_renewal ? d.last_renewal.at + " (" + d.last_renewal.strategy + ", " + d.last_renewal.result + ")" : "-";
  $(".next", card).textContent = d.next_action ? d.next_action.action + " at " + d.next_action.at + ": " + d.next_action.reason : "-";
  $(".strategies", card).textContent = (d.strategies || []).join(", ") + (d.disabled_strategies && d.disabled_strategies.length ? " (stopped: " + d.disabled_strategies.join(", ") + ")" : "");
  const conds = Object.entries(d.conditions || {}).map(([k, v]) => k + ": " + v);
  $(".conditions", card).textContent = conds.length ? conds.join("; ") : "none";
  tick();
}

function tick() {
  for (const [id, acc] of state.accounts) {
    const b = badgeOf(acc);
    const card = document.getElementById("account-" + id);
    if (card) setBadge($(".badge", card), b);
    const top = document.getElementById("top-badge-" + id);
    if (top) setBadge(top, b, state.accounts.size > 1 ? id : "");
    updateBanners(id, acc);
  }
}

async function refresh() {
  const r = await api("GET", "/api/v1/accounts");
  if (!r.ok) return;
  for (const a of r.data.accounts) {
    state.accounts.set(a.account, { data: a, fetchedAt: Date.now() });
    render(a.account);
  }
}

function addEvent(e) {
  const li = document.createElement("li");
  li.textContent = e.at + " " + e.account + " " + e.kind + " " + e.outcome;
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > 20) list.lastChild.remove();
  $("#events-card").hidden = false;
}

async function renew(id) {
  const card = document.getElementById("account-" + id);
  const button = card && $(".renew", card);
  if (button) button.disabled = true;
  if (card) $(".result", card).textContent = "Renewing...";
  const r = await api("POST", "/api/v1/accounts/" + encodeURIComponent(id) + "/renew");
  if (button) button.disabled = false;
  if (card) $(".result", card).textContent = r.ok ? "Renewed (" + r.data.strategy + ")." : "Renewal failed: " + (r.data && r.data.error ? r.data.error.message : r.status);
  await refresh();
}

async function login(id) {
  const r = await api("POST", "/api/v1/accounts/" + encodeURIComponent(id) + "/login-link");
  if (r.ok) window.location.assign(r.data.login_url);
}

async function importToken(id, card) {
  const input = $(".import-form input", card);
  const r = await api("PUT", "/api/v1/accounts/" + encodeURIComponent(id) + "/token", { access_token: input.value.trim() });
  input.value = "";
  $(".result", card).textContent = r.ok ? "Token stored." : "Not stored: " + (r.data && r.data.error ? r.data.error.message : r.status);
  if (r.ok) $(".import-form", card).hidden = true;
  await refresh();
}

function listen() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("snapshot", (m) => {
    const data = JSON.parse(m.data);
    for (const a of data.accounts) {
      state.accounts.set(a.account, { data: a, fetchedAt: Date.now() });
      render(a.account);
    }
  });
  const onEvent = (m) => { addEvent(JSON.parse(m.data)); refresh(); };
  es.addEventListener("audit", onEvent);
  es.addEventListener("alert", onEvent);
}

// The relay, live (GET /api/v1/feed/live, one event a second): each account's upstream
// connections, local consumers and the latest ticks of the instruments they subscribe.
// The card stays hidden until some consumer has started an account's relay.
function feedTable(head, rows, cls) {
  const t = document.createElement("table");
  t.className = "feed" + (cls ? " " + cls : "");
  const tr = document.createElement("tr");
  for (const h of head) { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); }
  t.appendChild(tr);
  for (const r of rows) {
    const row = document.createElement("tr");
    if (r.key) row.dataset.key = r.key;
    for (const [i, v] of (r.cells || r).entries()) {
      const td = document.createElement("td");
      td.textContent = String(v);
      if (r.classes && r.classes[i]) td.className = r.classes[i];
      row.appendChild(td);
    }
    t.appendChild(row);
  }
  return t;
}

// A last-trade time (epoch ms) as HH:MM:SS IST.
function istTime(ms) {
  if (!ms) return "-";
  return new Date(Number(ms) + 5.5 * 3600 * 1000).toISOString().slice(11, 19);
}

function renderFeed(data) {
  if (!data || !data.accounts || !data.accounts.length) return;
  const box = $("#feed");
  box.replaceChildren();
  for (const a of data.accounts) {
    const h = document.createElement("h3");
    h.textContent = a.account + ": " + a.upstream.keys + " keys, " + a.upstream.allowed_connections + " connections allowed";
    box.appendChild(h);
    const keys = (k) => Object.values(k).reduce((x, y) => x + y, 0);
    box.appendChild(feedTable(
      ["instrument", "last", "change", "qty", "time (IST)", "mode"],
      (a.ticks || []).map((t) => ({
        key: t.key,
        cells: [t.key, t.ltp.toFixed(2), t.cp ? ((t.ltp - t.cp) / t.cp * 100).toFixed(2) + "%" : "-", t.ltq, istTime(t.ltt), t.mode || "-"],
        classes: ["", "ltp", "", "", "ltt", ""],
      })), "ticks"));
    box.appendChild(feedTable(
      ["upstream", "state", "keys", "messages", "reconnects", "last error"],
      a.upstream.connections.filter((c) => c.state !== "idle" || keys(c.keys) > 0).map((c) =>
        [c.index, c.state, keys(c.keys), c.messages, c.reconnects, c.last_error || ""]), "connections"));
    box.appendChild(feedTable(
      ["consumer", "kind", "keys", "lag", "drops", "delivered"],
      a.local.consumers.map((c) => [c.name, c.kind, c.keys, c.lag, c.drops, c.delivered]), "consumers"));
  }
  $("#feed-card").hidden = false;
}

function listenFeed() {
  const es = new EventSource("/api/v1/feed/live");
  es.addEventListener("feed", (m) => renderFeed(JSON.parse(m.data)));
}

async function start() {
  const s = await api("GET", "/dashboard/session");
  if (!s.ok) { $("#signin").hidden = false; return; }
  state.csrf = s.data.csrf;
  const out = $("#signout");
  out.hidden = false;
  out.addEventListener("click", async () => { await api("POST", "/dashboard/signout"); window.location.reload(); });
  await refresh();
  listen();
  setInterval(tick, 1000);
  // The daemon's clock can jump (the simulator's demo): resync now and then.
  setInterval(refresh, 5000);
  listenFeed();
}

document.addEventListener("DOMContentLoaded", start);

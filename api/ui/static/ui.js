// The operator page: reads /handovers… every few seconds with the session cookie,
// sends the session's CSRF token with a replay. Every value from the API goes into
// the page as text (textContent, setAttribute), never as HTML.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const LIST_LIMIT = 50;
  const FAILED_LIMIT = 20;
  const SVG = "http://www.w3.org/2000/svg";
  const state = { csrf: null, open: false, timer: null, selected: null, busy: false, again: false };

  class SignedOut extends Error {}

  const $ = (id) => document.getElementById(id);

  async function api(method, path) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
    const response = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
    });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (response.status === 401 && !path.startsWith("/ui/session")) {
      showSignIn("Your session has ended: sign in again.");
      throw new SignedOut();
    }
    return { status: response.status, body };
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function time(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "none waiting";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function errorText(error) {
    if (!error) return "";
    const parts = [];
    if (error.status) parts.push(error.status);
    if (error.code) parts.push("(" + error.code + ")");
    parts.push(error.message || "");
    return parts.join(" ");
  }

  // --- signing in and out -----------------------------------------------------------

  function showSignIn(message) {
    stopRefreshing();
    state.csrf = null;
    $("dashboard").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = message || "";
    $("token").focus();
  }

  function showDashboard() {
    $("sign-in").hidden = true;
    $("dashboard").hidden = false;
    $("sign-out").hidden = state.open;
    refresh();
    stopRefreshing();
    state.timer = setInterval(refresh, REFRESH_MS);
  }

  function stopRefreshing() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
  }

  function signedIn(body) {
    state.csrf = body.csrf_token;
    state.open = Boolean(body.open);
    if (state.open) $("refreshed").textContent = "no admin token configured: open to anyone";
    showDashboard();
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("token").value;
    const response = await fetch("/ui/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
      cache: "no-store",
    });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (response.ok && body && body.signed_in) {
      $("token").value = "";
      signedIn(body);
    } else {
      $("sign-in-error").textContent = (body && body.message) || ("Sign-in failed: " + response.status);
    }
  }

  async function signOut() {
    await api("DELETE", "/ui/session");
    showSignIn("Signed out.");
  }

  // --- the summary --------------------------------------------------------------------

  function renderSummary(summary) {
    for (const [name, value] of Object.entries(summary.counts)) {
      const node = $("count-" + name);
      if (node) node.textContent = String(value);
    }
    $("oldest-waiting").textContent = duration(summary.oldest_waiting_seconds);
    renderTargets(summary.targets);
    renderChart(summary.throughput);
  }

  function renderTargets(targets) {
    const select = $("target-filter");
    const have = Array.from(select.options).slice(1).map((option) => option.value);
    if (have.join(",") === targets.join(",")) return;
    const chosen = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const target of targets) {
      const option = el("option", target);
      option.value = target;
      select.appendChild(option);
    }
    select.value = targets.includes(chosen) ? chosen : "";
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function renderChart(throughput) {
    const chart = $("chart");
    const buckets = throughput.buckets;
    // Drawn at the chart's own width, so bars and labels keep their proportions.
    const full = Math.max(Math.round(chart.getBoundingClientRect().width), 320);
    chart.setAttribute("viewBox", "0 0 " + full + " 140");
    const left = 34, top = 10, width = full - left - 10, height = 105;
    const peak = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed));
    const step = width / Math.max(buckets.length, 1);
    const nodes = [
      svg("line", { x1: left, y1: top, x2: left + width, y2: top, class: "grid" }),
      svg("line", { x1: left, y1: top + height, x2: left + width, y2: top + height, class: "grid" }),
      svg("text", { x: left - 4, y: top + 4, "text-anchor": "end", class: "axis" }, peak),
      svg("text", { x: left - 4, y: top + height, "text-anchor": "end", class: "axis" }, 0),
      svg("text", { x: left, y: top + height + 14, class: "axis" }, "60 min ago"),
      svg("text", { x: left + width, y: top + height + 14, "text-anchor": "end", class: "axis" }, "now"),
    ];
    buckets.forEach((bucket, index) => {
      const x = left + index * step + 1;
      const w = Math.max(step - 2, 1);
      const ok = (bucket.succeeded / peak) * height;
      const bad = (bucket.failed / peak) * height;
      const group = svg("g", {});
      const at = new Date(bucket.start * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      group.appendChild(svg("title", {}, at + ": " + bucket.succeeded + " succeeded, " + bucket.failed + " failed"));
      if (ok > 0) group.appendChild(svg("rect", { x, y: top + height - ok, width: w, height: ok, class: "ok" }));
      if (bad > 0) group.appendChild(svg("rect", { x, y: top + height - ok - bad, width: w, height: bad, class: "bad" }));
      nodes.push(group);
    });
    chart.replaceChildren(...nodes);
  }

  // --- the lists ----------------------------------------------------------------------

  function idButton(record) {
    // The id shortened in the lists (the detail shows it whole).
    const button = el("button", record.handover_id.slice(0, 11) + "…", "link");
    button.type = "button";
    button.title = record.handover_id;
    button.dataset.id = record.handover_id;
    button.addEventListener("click", () => openDetail(record.handover_id));
    return button;
  }

  function cell(row, content, className) {
    const td = el("td", null, className);
    if (content instanceof Node) td.appendChild(content); else td.textContent = content === null || content === undefined ? "" : String(content);
    row.appendChild(td);
    return td;
  }

  function renderRecent(records) {
    const rows = records.map((record) => {
      const row = el("tr");
      row.dataset.id = record.handover_id;
      if (record.handover_id === state.selected) row.classList.add("selected");
      cell(row, time(record.replayed_at || record.created_at));
      cell(row, idButton(record));
      cell(row, record.target);
      cell(row, record.identity);
      cell(row, el("span", record.state, "state " + record.state));
      cell(row, record.attempts);
      cell(row, errorText(record.error), "error");
      return row;
    });
    document.querySelector("#recent tbody").replaceChildren(...rows);
    $("recent-empty").hidden = records.length > 0;
  }

  function renderFailed(records) {
    const rows = records.map((record) => {
      const row = el("tr");
      row.dataset.id = record.handover_id;
      cell(row, time(record.finished_at));
      cell(row, idButton(record));
      cell(row, record.target);
      cell(row, record.identity);
      cell(row, record.attempts);
      cell(row, errorText(record.error), "error");
      const replay = el("button", "Replay", "replay");
      replay.type = "button";
      replay.addEventListener("click", () => replayHandover(record.handover_id, replay));
      cell(row, replay);
      return row;
    });
    document.querySelector("#failed tbody").replaceChildren(...rows);
    $("failed-empty").hidden = records.length > 0;
  }

  // --- one handover -------------------------------------------------------------------

  function fieldText(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function renderDetail(record) {
    $("detail-id").textContent = record.handover_id;
    const items = [];
    for (const [name, value] of Object.entries(record)) {
      items.push(el("dt", name));
      items.push(el("dd", fieldText(value)));
    }
    $("detail-fields").replaceChildren(...items);
    $("detail").hidden = false;
  }

  async function openDetail(handoverId) {
    state.selected = handoverId;
    for (const row of document.querySelectorAll("#recent tbody tr")) {
      row.classList.toggle("selected", row.dataset.id === handoverId);
    }
    await loadDetail();
  }

  async function loadDetail() {
    if (!state.selected) return;
    const { status, body } = await api("GET", "/handovers/" + encodeURIComponent(state.selected));
    if (status === 200) renderDetail(body);
    else closeDetail();
  }

  function closeDetail() {
    state.selected = null;
    $("detail").hidden = true;
    for (const row of document.querySelectorAll("#recent tbody tr.selected")) row.classList.remove("selected");
  }

  async function replayHandover(handoverId, button) {
    button.disabled = true;
    const answer = $("replay-answer");
    try {
      const { status, body } = await api("POST", "/handovers/" + encodeURIComponent(handoverId) + "/replay");
      answer.hidden = false;
      if (status === 202) {
        answer.className = "answer";
        answer.textContent = handoverId + ": replayed, " + body.state + " (replay " + body.replays + ")";
      } else {
        answer.className = "answer refused";
        answer.textContent = handoverId + ": refused (" + status + " " + ((body && body.error) || "") + "): " + ((body && body.message) || "");
      }
      await refresh();
    } finally {
      button.disabled = false;
    }
  }

  // --- refreshing ---------------------------------------------------------------------

  function listQuery() {
    const query = new URLSearchParams({ state: $("state-filter").value, limit: String(LIST_LIMIT) });
    if ($("target-filter").value) query.set("target", $("target-filter").value);
    return query.toString();
  }

  function filterChanged() {
    // Nothing listed under the old filter stays on screen under the new one.
    document.querySelector("#recent tbody").replaceChildren();
    refresh();
  }

  async function refresh() {
    if (state.busy) {
      state.again = true; // a filter changed or a replay answered: one more round after this one
      return;
    }
    state.busy = true;
    try {
      const query = listQuery();
      const [summary, recent, failed] = await Promise.all([
        api("GET", "/handovers/summary"),
        api("GET", "/handovers?" + query),
        api("GET", "/handovers?state=failed&limit=" + FAILED_LIMIT),
      ]);
      for (const answer of [summary, recent, failed]) {
        if (answer.status !== 200) throw new Error((answer.body && answer.body.message) || ("HTTP " + answer.status));
      }
      renderSummary(summary.body);
      if (query === listQuery()) renderRecent(recent.body.handovers);
      renderFailed(failed.body.handovers);
      await loadDetail();
      $("problem").textContent = "";
      if (!state.open) $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (error) {
      if (!(error instanceof SignedOut)) $("problem").textContent = "Could not refresh: " + error.message;
    } finally {
      state.busy = false;
      if (state.again && state.timer !== null) {
        state.again = false;
        refresh();
      }
    }
  }

  async function start() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("detail-close").addEventListener("click", closeDetail);
    $("state-filter").addEventListener("change", filterChanged);
    $("target-filter").addEventListener("change", filterChanged);
    const { body } = await api("GET", "/ui/session");
    if (body && body.signed_in) signedIn(body); else showSignIn("");
  }

  document.addEventListener("DOMContentLoaded", start);
})();

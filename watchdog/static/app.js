"use strict";
// Sluice status page: polls /api/status and renders it. No build step.
(function () {
  const $ = (s) => document.querySelector(s);
  let token = sessionStorage.getItem("sluice-token") || "";
  let control = false;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "title") e.title = v;
      else if (k === "onclick") e.addEventListener("click", v);
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }

  // fmtTime is the page's one time format: local 24-hour time, with the
  // date when it is not today ("14:03:07", "2026-12-05 23:59:01").
  function pad(n) { return String(n).padStart(2, "0"); }
  function fmtTime(t) {
    const d = t instanceof Date ? t : new Date(t);
    if (isNaN(d)) return String(t || "");
    const hms = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hms;
  }
  // times renders the RFC 3339 times inside a server text in fmtTime.
  function times(text) {
    return String(text || "").replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)/g, (m) => fmtTime(m));
  }
  function timeEl(t) {
    const e = el("time", {}, t ? fmtTime(t) : "");
    if (t) e.setAttribute("datetime", t);
    return e;
  }

  function say(text, bad) {
    const m = $("#msg");
    m.textContent = text;
    m.className = bad ? "errors" : "";
  }

  async function act(url, body, what) {
    if (!token) { say("Enter the operator token first.", true); return; }
    say(what + "…");
    try {
      const r = await fetch(url, {
        method: "POST",
        headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
        body: JSON.stringify(body || {}),
      });
      const j = await r.json().catch(() => ({}));
      if (!r.ok) { say(what + " failed (" + r.status + "): " + (j.error || r.statusText), true); }
      else { say(what + " done: " + JSON.stringify(j)); }
    } catch (e) {
      say(what + " failed: " + e, true);
    }
    refresh();
  }

  function laneCell(l) {
    const lag = l.lag + " waiting";
    let title = l.consumer + ": " + l.state + ", pending " + l.pending + ", ack pending " + l.ack_pending +
      ", ack floor " + l.ack_floor_stream_seq + ", redelivered " + l.redelivered;
    if (l.paused_until) title += ", paused until " + fmtTime(l.paused_until);
    if (l.note) title += " — " + times(l.note);
    const cell = el("div", { class: "lane state-" + l.state, "data-consumer": l.consumer, "data-state": l.state, title },
      el("div", {}, l.partition + " · " + l.state), el("div", {}, lag));
    if (control) {
      const enc = encodeURIComponent(l.consumer);
      if (l.state === "paused") {
        cell.append(el("button", { class: "resume", onclick: () => act("api/lanes/" + enc + "/resume", {}, "Resume " + l.consumer) }, "Resume"));
      } else {
        cell.append(el("button", { class: "pause", onclick: () => {
          const reason = prompt("Pause " + l.consumer + ": why?");
          if (reason !== null) act("api/lanes/" + enc + "/pause", { reason }, "Pause " + l.consumer);
        } }, "Pause"));
      }
    }
    return cell;
  }

  // renderLanes draws one wrapping row of equal cells per stage (cell text:
  // "partition · state", then the lag).
  function renderLanes(st) {
    const t = $("#lanes");
    t.replaceChildren();
    for (const stage of st.stages || []) {
      const row = el("div", { class: "stage", "data-stage": stage }, el("h3", {}, stage));
      for (let p = 0; p < st.partitions; p++) {
        const l = st.lanes.find((x) => x.stage === stage && x.partition === p);
        row.append(l ? laneCell(l) : el("div", { class: "lane state-none", title: "no lane consumer (stage not running here)" }, p + " · —"));
      }
      t.append(row);
    }
  }

  function renderParked(st) {
    const tb = $("#parked tbody");
    tb.replaceChildren();
    if (!st.parked.length) tb.append(el("tr", {}, el("td", { class: "muted" }, "none")));
    for (const k of st.parked) {
      const base = "api/parked/" + encodeURIComponent(k.stage) + "/" + encodeURIComponent(k.key);
      const what = k.stage + " key " + k.key;
      const buttons = el("td", {});
      if (control) {
        buttons.append(
          el("button", { class: "replay", onclick: () => act(base + "/replay", {}, "Replay " + what) }, "Replay"), " ",
          el("button", { class: "discard", onclick: () => {
            const reason = prompt("Discard the parked events of " + what + " for good. Reason (required):");
            if (reason) act(base + "/discard", { reason }, "Discard " + what);
          } }, "Discard"));
      }
      tb.append(el("tr", { "data-stage": k.stage, "data-key": k.key },
        el("td", {}, k.stage), el("td", {}, k.type || ""), el("td", {}, k.key), el("td", {}, k.count),
        el("td", {}, k.state || ""), el("td", {}, times(k.reason)), el("td", {}, timeEl(k.parked_at)), buttons));
    }
  }

  function renderAlerts(st) {
    const ul = $("#conditions");
    ul.replaceChildren();
    if (!st.conditions.length) ul.append(el("li", { class: "muted" }, "none"));
    for (const c of st.conditions) ul.append(el("li", {}, timeEl(c.since), " " + c.condition + ": " + times(c.text)));
    const tb = $("#alerts tbody");
    tb.replaceChildren();
    if (!st.alerts.length) tb.append(el("tr", {}, el("td", { class: "muted" }, "none")));
    for (const a of st.alerts) tb.append(el("tr", {}, el("td", {}, timeEl(a.at)), el("td", {}, a.kind), el("td", {}, times(a.text))));
  }

  function ago(t, now) {
    const s = Math.max(0, Math.round((now - new Date(t)) / 1000));
    if (s < 120) return s + "s";
    if (s < 7200) return Math.round(s / 60) + "m";
    return Math.round(s / 3600) + "h";
  }

  function renderDelivery(st) {
    const now = new Date(st.at);
    const a = st.audit, p = $("#audit");
    if (!a) {
      p.className = "muted";
      p.textContent = "no audit yet (the watchdog audits the last 10 minutes every 10 minutes, the first 30 s after it starts; or run `sluice audit --since 24h`)";
    } else {
      const t = a.totals;
      const scope = (a.key ? " key " + a.key : "") + (a.type ? " type " + a.type : "");
      p.className = a.ok ? "audit-ok" : "audit-failed";
      p.setAttribute("data-ok", a.ok ? "true" : "false");
      p.textContent = (a.ok ? "OK" : "FAILED") + " — last audit at " + fmtTime(a.ran_at) + " (" + ago(a.ran_at, now) + " ago)" + scope + ": " +
        t.accepted + " accepted, " + t.delivered + " delivered, " + t.parked + " parked, " + t.in_flight + " in flight, " +
        t.lost + " lost, " + t.reordered_keys + " keys reordered, " + t.duplicates + " duplicates" +
        (a.lost && a.lost.length ? " (lost: " + a.lost.join(" ") + ")" : "");
    }
    const o = st.oldest, q = $("#oldest");
    const parts = [];
    if (o && o.in_flight) parts.push("oldest undelivered: " + o.in_flight.id + " (" + o.in_flight.type + ", key " +
      o.in_flight.key + ") accepted " + ago(o.in_flight.accepted_at, now) + " ago");
    if (o && o.parked) parts.push("oldest parked: " + o.parked.id + " (key " + o.parked.key + ", " + o.parked.why +
      ") " + ago(o.parked.accepted_at, now) + " ago");
    q.textContent = parts.length ? parts.join(" · ") : "nothing waiting";
  }

  async function refresh() {
    try {
      const r = await fetch("api/status", { cache: "no-store" });
      const st = await r.json();
      control = st.control && token !== "";
      renderLanes(st);
      renderParked(st);
      renderDelivery(st);
      renderAlerts(st);
      $("#errors").textContent = (st.errors || []).join("; ");
      $("#updated").textContent = "updated " + fmtTime(st.at) +
        (st.control ? "" : " · read-only (no watchdog.page.token configured)");
      document.body.setAttribute("data-loaded", "true");
    } catch (e) {
      $("#errors").textContent = "status unavailable: " + e;
    }
  }

  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("sluice-token", token);
    $("#token").value = "";
    say(token ? "Token set for this tab." : "Token cleared.");
    refresh();
  });
  let lastHistory = null;
  async function refreshChart() {
    try {
      const r = await fetch("api/history", { cache: "no-store" });
      lastHistory = await r.json();
      window.SluiceChart.render($("#chart"), lastHistory, fmtTime);
    } catch (e) {
      $("#errors").textContent = "history unavailable: " + e;
    }
  }
  window.addEventListener("resize", () => { if (lastHistory) window.SluiceChart.render($("#chart"), lastHistory, fmtTime); });

  refresh();
  refreshChart();
  setInterval(refresh, 2000);
  setInterval(refreshChart, 2000);
})();

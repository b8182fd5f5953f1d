"use strict";
// Sluice status page: the last 15 minutes as four small SVG charts, drawn
// from GET /api/history (samples the watchdog keeps in memory). No library,
// no external service.
window.SluiceChart = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1565c0", "#2e7d32", "#c62828", "#f9a825", "#6a1b9a", "#555"];

  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmtNum(v) {
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    if (v >= 10 || v === 0) return String(Math.round(v));
    return v.toFixed(1);
  }

  // panel draws one chart: series = [{name, values: [[t ms, v|null]...]}].
  function panel(width, title, unit, series, t0, t1, fmtTime) {
    const height = 120, left = 40, right = 8, top = 8, bottom = 20;
    let max = 0;
    for (const s of series) for (const [, v] of s.values) if (v !== null && v > max) max = v;
    max = max > 0 ? max * 1.1 : 1;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);
    const fig = document.createElement("figure");
    fig.className = "chart";
    const cap = document.createElement("figcaption");
    cap.append(title + " ");
    const g = svg("svg", { width, height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": title });
    g.append(svg("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "axis" }));
    g.append(svg("line", { x1: left, y1: top, x2: left, y2: y(0), class: "axis" }));
    g.append(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", class: "tick" }, fmtNum(max)));
    g.append(svg("text", { x: left - 4, y: y(0), "text-anchor": "end", class: "tick" }, "0"));
    g.append(svg("text", { x: left, y: height - 4, class: "tick" }, fmtTime(new Date(t0))));
    g.append(svg("text", { x: width - right, y: height - 4, "text-anchor": "end", class: "tick" }, fmtTime(new Date(t1))));
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = s.values.filter(([, v]) => v !== null).map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1));
      const line = svg("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.5,
        "data-series": s.name, "data-values": s.values.filter(([, v]) => v !== null).map(([, v]) => +v.toFixed(3)).join(",") });
      g.append(line);
      const last = s.values.length ? s.values[s.values.length - 1][1] : null;
      const key = document.createElement("span");
      key.className = "key";
      key.style.color = color;
      key.textContent = "■ " + s.name + (last !== null ? " " + fmtNum(last) + unit : "");
      cap.append(key, " ");
    });
    fig.append(cap, g);
    return fig;
  }

  // render replaces box's content with the charts of history h.
  function render(box, h, fmtTime) {
    const t1 = new Date(h.at).getTime(), t0 = t1 - 15 * 60 * 1000;
    const pts = h.points || [];
    const at = (p) => new Date(p.at).getTime();
    const stages = new Set(), classes = new Set();
    for (const p of pts) {
      Object.keys(p.lag || {}).forEach((s) => stages.add(s));
      Object.keys(p.crm_per_s || {}).forEach((c) => classes.add(c));
    }
    const series = (name, f) => ({ name, values: pts.map((p) => [at(p), f(p)]) });
    // Two charts a row when there is room, else one; never wider than the box.
    const full = Math.floor(box.clientWidth || 300), cols = full >= 760 ? 2 : 1;
    const width = Math.max(160, Math.floor((full - (cols - 1) * 16) / cols) - 2);
    const kids = [
      panel(width, "Events per second", "/s", [
        series("delivered", (p) => p.delivered_per_s),
        series("accepted", (p) => p.accepted_per_s),
      ], t0, t1, fmtTime),
      panel(width, "Lag (messages not yet acked) per stage", "", [...stages].sort().map((s) => series(s, (p) => (p.lag || {})[s] || 0)), t0, t1, fmtTime),
      panel(width, "CRM answers per second", "/s", [...classes].sort().map((c) => series(c, (p) => (p.crm_per_s || {})[c] || 0)), t0, t1, fmtTime),
      panel(width, "Paused lanes", "", [series("paused", (p) => p.paused_lanes)], t0, t1, fmtTime),
    ];
    box.replaceChildren(...kids);
    box.setAttribute("data-points", String(pts.length));
  }

  return { render };
})();

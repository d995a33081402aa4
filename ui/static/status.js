"use strict";
// The status page: polls the JSON document every few seconds and redraws the
// tables from it. Every text goes in through textContent, never as HTML: keys
// and names are whatever clients and operators chose.
(function () {
  const POLL_MS = 3000;
  const FOLD_OVER = 20; // keyspaces with more ranges start folded
  const open = {};      // keyspace -> open, once the reader toggled it
  let last = null;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }
  const td = (v, cls) => el("td", cls ? { class: cls } : {}, v);
  const unknown = () => el("span", { class: "unknown", title: "not known" }, "—");

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }
  const num = (v) => (v === null || v === undefined ? unknown() : Number(v).toLocaleString("en"));
  const rate = (v) => (v === null || v === undefined ? unknown() : v.toFixed(1));

  function card(value, label) {
    return el("div", { class: "card" }, el("b", {}, value), el("span", {}, label));
  }

  function renderSummary(s) {
    const stores = s.members.filter((m) => m.store_id);
    const down = stores.filter((m) => m.health !== "alive").length;
    const box = document.getElementById("summary");
    box.replaceChildren(
      card(stores.length - down + " / " + stores.length, "stores alive"),
      card(s.frontends.length, "frontends"),
      card(s.ranges.length, "ranges"),
      card(s.totals.sessions.toLocaleString("en"), "sessions online"),
      card(s.totals.in_per_sec.toFixed(1), "messages in /s"),
      card(s.totals.out_per_sec.toFixed(1), "messages out /s"),
    );
  }

  function renderMembers(s) {
    const rows = s.members.map((m) => el("tr", { "data-member": m.name },
      td(m.name),
      td(m.role + (m.mqtt && m.role !== "frontend" ? " + mqtt" : "")),
      td(m.store_id || ""),
      td(m.health, m.health),
      td(m.grpc || ""),
      td(m.gossip || ""),
      td(m.store_id ? m.replicas : "", "num"),
      td(m.store_id ? m.leaders : "", "num"),
      td(m.store_id ? bytes(m.bytes) : "", "num"),
    ));
    document.querySelector("#members tbody").replaceChildren(...rows);
  }

  function renderFrontends(s) {
    const rows = s.frontends.map((f) => {
      let from = unknown();
      if (f.from) {
        const age = Math.max(0, Math.round((s.generated_unix_ms - f.sampled_unix_ms) / 1000));
        from = f.from + (f.from === "$SYS" ? ", " + age + " s ago" : "");
      }
      return el("tr", { "data-frontend": f.name },
        td(f.name), td(num(f.sessions), "num"), td(rate(f.in_per_sec), "num"), td(rate(f.out_per_sec), "num"),
        td(num(f.messages_in), "num"), td(num(f.messages_out), "num"), td(from));
    });
    document.querySelector("#frontends tbody").replaceChildren(...rows);
  }

  function matches(r, q, missing) {
    if (!q) return true;
    return String(r.id) === q || r.start.includes(q) || r.end.includes(q) ||
      r.replicas.some((id) => id === q) || (q === "missing" && r.replicas.some((id) => missing.has(id)));
  }

  function renderRanges(s) {
    const q = document.getElementById("filter").value.trim();
    const missing = new Set(s.members.filter((m) => m.health === "missing").map((m) => m.store_id));
    const byKs = new Map();
    for (const r of s.ranges) {
      if (!byKs.has(r.keyspace)) byKs.set(r.keyspace, []);
      byKs.get(r.keyspace).push(r);
    }
    const parts = s.keyspaces.map((ks) => {
      const shown = (byKs.get(ks.name) || []).filter((r) => matches(r, q, missing));
      const rows = shown.map((r) => el("tr", { "data-range": r.id },
        td(r.id, "num"),
        td(r.start === "" ? "(start)" : r.start, "key"),
        td(r.end === "" ? "(end)" : r.end, "key"),
        td(r.ver, "num"),
        td(el("span", {}, ...r.replicas.flatMap((id, i) => [i ? ", " : "",
          el("span", missing.has(id) ? { class: "missing", title: "store not in the cluster" } : {}, id)]))),
        r.leader ? td(r.leader, "num") : td("none", "num bad"),
        td(r.state, r.state === "normal" ? "" : "warn"),
        td(r.size_known ? bytes(r.size) : unknown(), "num"),
      ));
      const table = el("table", {},
        el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Range"), el("th", {}, "Start"), el("th", {}, "End"),
          el("th", { class: "num" }, "Ver"), el("th", {}, "Replicas (store)"), el("th", { class: "num" }, "Leader"),
          el("th", {}, "State"), el("th", { class: "num" }, "Size"))),
        el("tbody", {}, ...rows));
      const health = [];
      if (ks.leaderless) health.push(el("span", { class: "bad" }, ks.leaderless + " without leader"));
      if (ks.degraded) health.push(el("span", { class: "bad" }, ks.degraded + " with a replica on a missing store"));
      const summary = el("summary", {}, el("b", {}, ks.name),
        ks.ranges + (ks.ranges === 1 ? " range, " : " ranges, ") + bytes(ks.bytes) + (q ? ", " + shown.length + " match" : "") + " ",
        ...health.flatMap((h) => [" · ", h]));
      const d = el("details", { "data-keyspace": ks.name }, summary, table);
      d.open = q ? shown.length > 0 : (open[ks.name] ?? ks.ranges <= FOLD_OVER);
      d.addEventListener("toggle", () => { if (!q) open[ks.name] = d.open; });
      return d;
    });
    if (parts.length === 0) parts.push(el("p", { class: "unknown" }, "No ranges known yet."));
    document.getElementById("keyspaces").replaceChildren(...parts);
  }

  function render(s) {
    document.getElementById("node").textContent = "seen from " + s.node;
    document.getElementById("updated").textContent = "updated " + new Date(s.generated_unix_ms).toLocaleTimeString("en-GB");
    const errors = document.getElementById("errors");
    errors.hidden = s.errors.length === 0;
    errors.textContent = s.errors.join("; ");
    renderSummary(s);
    renderMembers(s);
    renderFrontends(s);
    renderRanges(s);
  }

  async function poll() {
    try {
      const resp = await fetch("api/v1/status", { cache: "no-store" });
      const body = await resp.json();
      if (!resp.ok) throw new Error(body.error || resp.statusText);
      last = body;
      render(body);
    } catch (err) {
      const errors = document.getElementById("errors");
      errors.hidden = false;
      errors.textContent = "Cannot read the status: " + err.message + (last ? " (showing the last reading)" : "");
    }
    setTimeout(poll, POLL_MS);
  }

  // The filter is kept in the address (#filter=...), to share or reload.
  const filter = document.getElementById("filter");
  if (location.hash.startsWith("#filter=")) filter.value = decodeURIComponent(location.hash.slice(8));
  filter.addEventListener("input", () => {
    history.replaceState(null, "", filter.value ? "#filter=" + encodeURIComponent(filter.value) : location.pathname);
    if (last) renderRanges(last);
  });
  poll();
})();

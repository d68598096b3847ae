// The usage page: signs in with an API token, then shows a month's daily
// usage as charts and the month's invoice. It talks only to this server's
// API; numbers on the charts are for the eye (floats), every amount is the
// API's exact decimal string.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const GB = 1073741824;
  const KINDS = ["bandwidthIn", "bandwidthOut", "storage", "license"];
  let token = sessionStorage.getItem("feedmeter-token") || "";
  let me = null;

  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = !msg;
  }

  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: "Bearer " + token, Accept: "application/json" } });
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      throw new Error(path + ": HTTP " + res.status);
    }
    if (!res.ok) {
      const err = new Error((body && body.error && body.error.message) || "HTTP " + res.status);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  // Parameters may come in the fragment: #tenant=1001&period=2026-10&tz=UTC
  function hashParams() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    return { tenant: p.get("tenant"), period: p.get("period"), tz: p.get("tz") };
  }

  function currentMonth() {
    const d = new Date();
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0");
  }

  async function signIn() {
    showError("");
    try {
      me = await api("/v1/whoami");
    } catch (e) {
      sessionStorage.removeItem("feedmeter-token");
      token = "";
      showError(e.status === 401 ? "Unknown token." : e.message);
      return;
    }
    sessionStorage.setItem("feedmeter-token", token);
    $("signin-form").hidden = true;
    $("pick").hidden = false;
    const h = hashParams();
    $("period").value = h.period || $("period").value || currentMonth();
    if (h.tz) $("tz").value = h.tz;
    if (me.admin) {
      $("who").textContent = "admin";
      $("tenant-label").hidden = false;
      $("tenant-fixed").hidden = true;
      if (h.tenant) $("tenant").value = h.tenant;
      loadTenantList();
    } else {
      $("who").textContent = "tenant " + me.tenant_id;
      $("tenant-label").hidden = true;
      $("tenant-fixed").hidden = false;
      $("tenant-fixed").textContent = "Tenant " + me.tenant_id;
      $("tenant").value = me.tenant_id;
    }
    if ($("tenant").value) show();
  }

  async function loadTenantList() {
    try {
      const r = await api("/v1/usage/tenants?limit=1000&period=" + encodeURIComponent($("period").value));
      const dl = $("tenants");
      dl.replaceChildren();
      for (const t of r.tenants) {
        const o = document.createElement("option");
        o.value = t.tenant_id;
        dl.appendChild(o);
      }
      if (!$("tenant").value && r.tenants.length) {
        $("tenant").value = r.tenants[0].tenant_id;
      }
    } catch (e) {
      showError(e.message);
    }
  }

  async function show() {
    showError("");
    const tenant = $("tenant").value.trim();
    const period = $("period").value;
    const tz = $("tz").value.trim() || "UTC";
    if (!tenant || !period) {
      showError("Pick a tenant and a month.");
      return;
    }
    $("status").textContent = "Loading…";
    $("report").hidden = true;
    const q = "period=" + encodeURIComponent(period) + "&tz=" + encodeURIComponent(tz);
    const base = "/v1/tenants/" + encodeURIComponent(tenant);
    try {
      const [usage, invoice] = await Promise.all([api(base + "/usage?granularity=day&" + q), api(base + "/invoice?" + q)]);
      renderCharts(usage);
      renderInvoice(invoice);
      $("report-title").textContent = "Tenant " + tenant + " — " + period + " (" + tz + ")";
      $("report").hidden = false;
      $("status").textContent = "";
      document.body.dataset.ready = "true";
    } catch (e) {
      $("status").textContent = "";
      showError(e.message);
    }
  }

  // ---- charts

  function value(row) {
    switch (row.kind) {
      case "bandwidthIn":
      case "bandwidthOut":
        return Number(row.bytes) / GB;
      case "storage":
        return Number(row.average_bytes) / GB;
      default:
        return row.servers || 0;
    }
  }

  function renderCharts(usage) {
    const days = [];
    const seen = new Set();
    for (const r of usage.rows) {
      if (!seen.has(r.start)) {
        seen.add(r.start);
        days.push(r.start);
      }
    }
    for (const kind of KINDS) {
      const byDay = new Map();
      for (const r of usage.rows) {
        if (r.kind === kind) byDay.set(r.start, r);
      }
      drawChart($("chart-" + kind), kind, days, byDay);
    }
  }

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(v, kind) {
    if (kind === "license") return String(Math.round(v));
    if (v === 0) return "0";
    const units = [[1e18, "E"], [1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e4, "k"]];
    for (const [n, u] of units) {
      if (v >= n) return (v / n).toPrecision(3) + u;
    }
    if (v >= 100) return v.toFixed(0);
    if (v >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }

  function drawChart(svg, kind, days, byDay) {
    const W = 640, H = 170, left = 52, bottom = 22, top = 10, right = 8;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.replaceChildren();
    svg.dataset.days = String(days.length);
    const vals = days.map((d) => (byDay.has(d) ? value(byDay.get(d)) : 0));
    const max = Math.max(...vals, kind === "license" ? 1 : 0) || 1;
    const plotW = W - left - right, plotH = H - top - bottom;
    const step = plotW / Math.max(days.length, 1);
    svg.appendChild(el("line", { x1: left, y1: top + plotH, x2: W - right, y2: top + plotH, class: "axis" }));
    svg.appendChild(el("text", { x: left - 6, y: top + 8, class: "tick", "text-anchor": "end" }, fmt(max, kind)));
    svg.appendChild(el("text", { x: left - 6, y: top + plotH, class: "tick", "text-anchor": "end" }, "0"));
    days.forEach((d, i) => {
      const h = (vals[i] / max) * plotH;
      const x = left + i * step + step * 0.12;
      const bar = el("rect", {
        x: x.toFixed(2), y: (top + plotH - h).toFixed(2), width: (step * 0.76).toFixed(2), height: h.toFixed(2),
        class: "bar bar-" + kind, "data-day": d.slice(0, 10), "data-value": String(vals[i]),
      });
      bar.appendChild(el("title", {}, d.slice(0, 10) + ": " + fmt(vals[i], kind)));
      svg.appendChild(bar);
      const dayNum = Number(d.slice(8, 10));
      if (i === 0 || dayNum % 5 === 0) {
        svg.appendChild(el("text", { x: (left + i * step + step / 2).toFixed(2), y: H - 6, class: "tick", "text-anchor": "middle" }, String(dayNum)));
      }
    });
    svg.setAttribute("aria-label", kind + ", " + days.length + " days, at most " + fmt(max, kind));
  }

  // ---- invoice

  const ITEM = {
    bandwidth_in: "Bandwidth in",
    bandwidth_out: "Bandwidth out",
    storage: "Storage",
    license: "Licences",
    license_external: "Licences (external)",
  };

  // when formats a local RFC 3339 time as its date, and the time of day
  // when it is not midnight.
  function when(t) {
    const hm = t.slice(11, 16);
    return hm === "00:00" ? t.slice(0, 10) : t.slice(0, 10) + " " + hm;
  }

  function shortQty(q) {
    const [i, f] = q.split(".");
    return f && f.length > 6 ? i + "." + f.slice(0, 6) + "…" : q;
  }

  function renderInvoice(inv) {
    const body = $("invoice-lines");
    body.replaceChildren();
    for (const l of inv.lines) {
      const tr = document.createElement("tr");
      const cells = [
        ITEM[l.item] || l.item,
        when(l.from) + " – " + when(l.to),
        l.tier_to === null && l.tier === 1 ? "" : l.tier + " (" + l.tier_from + "–" + (l.tier_to === null ? "" : l.tier_to) + ")",
        shortQty(l.quantity),
        l.unit,
        l.unit_price,
        l.amount,
      ];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (i === 3 || i >= 5) td.className = "num";
        if (i === 3) td.title = l.quantity_exact;
        tr.appendChild(td);
      });
      tr.className = "line";
      body.appendChild(tr);
    }
    if (!inv.lines.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 7;
      td.textContent = "No billable usage in this period.";
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $("invoice-currency").textContent = inv.currency;
    $("invoice-total").textContent = inv.total;
  }

  // ---- wiring

  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    signIn();
  });
  $("pick").addEventListener("submit", (ev) => {
    ev.preventDefault();
    show();
  });
  $("period").addEventListener("change", () => {
    if (me && me.admin) loadTenantList();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem("feedmeter-token");
    token = "";
    me = null;
    $("pick").hidden = true;
    $("report").hidden = true;
    $("signin-form").hidden = false;
    $("who").textContent = "";
  });
  if (token) signIn();
})();

// The console page (docs/console.md): polls /console/api/state every second and renders it. Read-only.
// Every value is set with textContent, never as HTML: node ids, errors and NACK texts come from outside.
"use strict";

const TYPES = ["cds", "eds", "sds", "lds", "rds"];
const POLL_MS = 1000;
let shownHistory = -1;
let shownGroup = "";
let shownGroupVersions = "";

// When the management API wants tokens, so does the console's API (docs/console.md); the token the operator
// types is kept for this tab only (sessionStorage) and sent as a bearer token, never put in a URL.
function authHeaders() {
  const token = sessionStorage.getItem("xds-console-token");
  return token ? {Authorization: "Bearer " + token} : {};
}

function askToken() {
  const box = document.getElementById("token-box");
  box.hidden = false;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function when(unix) {
  return unix ? new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "-";
}

function stateCell(state) {
  return el("td", {}, el("span", {class: "state state-" + state.replace(" ", "-")}, state));
}

function fill(tbodyParent, rows) {
  const body = document.querySelector(tbodyParent + " tbody");
  body.replaceChildren(...rows);
}

function renderProxies(doc) {
  const rows = [];
  const nacks = [];
  for (const p of doc.proxies) {
    const byType = Object.fromEntries(p.types.map((t) => [t.type, t]));
    const cells = TYPES.map((t) => byType[t] ? stateCell(byType[t].state) : stateCell("NOT SENT"));
    rows.push(el("tr", {"data-node": p.node_id}, el("td", {}, p.node_id), el("td", {}, p.group), ...cells,
                 el("td", {}, p.method.toUpperCase()), el("td", {}, p.envoy_version || "-")));
    for (const t of p.types) {
      if (t.nack_count > 0) {
        nacks.push(el("div", {class: "nack", "data-node": p.node_id, "data-type": t.type},
          `${p.node_id} ${t.type.toUpperCase()} rejected version ${t.nack_version} ` +
          `(${t.nack_count} NACKs, last ${when(t.nack_at)}${t.state === "NACKED" ? "" : "; since accepted a newer one"}):\n` +
          t.nack_message));
      }
    }
  }
  if (rows.length === 0) rows.push(el("tr", {}, el("td", {colspan: "9", class: "muted"}, "no proxies connected")));
  fill("#proxies", rows);
  document.getElementById("nacks").replaceChildren(...nacks);
}

function renderSources(doc) {
  fill("#sources", doc.sources.map((s) => {
    const r = s.registry;
    const registry = r ? `${r.kind}: ${r.failing_watches} failing watches, outage ${r.outage_s.toFixed(1)} s` : "-";
    return el("tr", {"data-source": s.name}, el("td", {}, s.name), stateCell(s.state), el("td", {}, when(s.last_sync)),
              el("td", {class: "error"}, s.error || ""), el("td", {}, registry));
  }));
}

function renderGroups(doc) {
  fill("#groups", doc.groups.map((g) => el("tr", {"data-group": g.name}, el("td", {}, g.name),
    el("td", {}, Object.entries(g.versions).map(([t, v]) => `${t}=${v}`).join("  ")),
    el("td", {}, Object.entries(g.counts).map(([t, n]) => `${n} ${t}`).join(", ")),
    el("td", {class: "error"}, g.error || ""))));
  const q = doc.quarantined.map((r) => el("div", {class: "nack"},
    `quarantined ${r.type}/${r.name} for ${r.group} (serving ${r.serving || "nothing"}): ${r.message}`));
  document.getElementById("quarantined").replaceChildren(...q);
  const routes = [];
  for (const g of doc.groups) {
    for (const r of g.routes) {
      const split = el("td", {class: "split"}, ...r.split.map((c) =>
        el("span", {}, c.weight == null ? c.cluster : `${c.cluster} ${c.weight}`)));
      if (r.split.length === 0) split.append(r.action);
      routes.push(el("tr", {"data-route": r.route}, el("td", {}, g.name), el("td", {}, r.route_config),
                     el("td", {}, r.virtual_host), el("td", {}, r.route), el("td", {}, r.match), split));
    }
  }
  fill("#routes", routes);
  const select = document.getElementById("group-select");
  const names = doc.groups.map((g) => g.name);
  if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
    const current = select.value;
    select.replaceChildren(...names.map((n) => el("option", {value: n}, n)));
    if (names.includes(current)) select.value = current;
  }
  const group = doc.groups.find((g) => g.name === select.value);
  const versions = group ? JSON.stringify(group.versions) : "";
  if (group && (group.name !== shownGroup || versions !== shownGroupVersions)) {
    shownGroup = group.name;
    shownGroupVersions = versions;
    loadResources(group.name);
  }
}

async function loadResources(group) {
  const target = document.getElementById("resources");
  const response = await fetch("/console/api/resources?group=" + encodeURIComponent(group),
                               {headers: authHeaders()});
  if (!response.ok) {
    target.replaceChildren(el("div", {class: "error"}, await response.text()));
    return;
  }
  const doc = await response.json();
  target.replaceChildren(...doc.resources.map((r) => el("details", {"data-resource": `${r.type}/${r.name}`},
    el("summary", {}, `${r.type.toUpperCase()} ${r.name} `, el("span", {class: "muted"}, r.version)),
    el("pre", {}, JSON.stringify(JSON.parse(r.json), null, 2)))));
}

function diffBlock(text) {
  const pre = el("pre", {});
  for (const line of text.split("\n")) {
    const cls = line.startsWith("+") && !line.startsWith("+++") ? "diff-add"
      : line.startsWith("-") && !line.startsWith("---") ? "diff-del" : "";
    pre.append(el("span", cls ? {class: cls} : {}, line + "\n"));
  }
  return pre;
}

function renderHistory(doc) {
  const newest = doc.history.length ? doc.history[0].seq : 0;
  if (newest === shownHistory) return;  // unchanged: keep what the operator expanded
  shownHistory = newest;
  const items = doc.history.map((c) => {
    const groups = c.groups.join(", ") + (c.group_count > c.groups.length ? ` and ${c.group_count - c.groups.length} more` : "");
    const what = c.initial ? `first snapshot: ${c.added.length} resources`
      : `${c.added.length} added, ${c.changed.length} changed, ${c.removed.length} removed`;
    const body = el("div", {});
    for (const [label, names] of [["added", c.added], ["changed", c.changed], ["removed", c.removed]]) {
      if (names.length) body.append(el("div", {}, `${label}: ${names.join(", ")}`));
    }
    for (const d of c.diffs) body.append(diffBlock(d.diff));
    if (c.truncated) body.append(el("div", {class: "muted"}, "(more changed than is kept; see xds render)"));
    return el("details", {"data-seq": String(c.seq)},
      el("summary", {}, `#${c.seq} ${when(c.at)} ${groups}: ${what}`), body);
  });
  if (items.length === 0) items.push(el("div", {class: "muted"}, "no changes recorded yet"));
  document.getElementById("history").replaceChildren(...items);
}

async function poll() {
  try {
    const response = await fetch("/console/api/state", {cache: "no-store", headers: authHeaders()});
    if (response.status === 401) {
      askToken();
      throw new Error("a management API token is needed");
    }
    document.getElementById("token-box").hidden = true;
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const doc = await response.json();
    const ready = document.getElementById("ready");
    ready.textContent = doc.ready ? "ready" : "not ready";
    ready.className = "badge " + (doc.ready ? "ready-yes" : "ready-no");
    renderProxies(doc);
    renderSources(doc);
    renderGroups(doc);
    renderHistory(doc);
    document.getElementById("updated").textContent = "updated " + when(doc.now);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (error) {
    document.getElementById("updated").textContent = "cannot reach the control plane: " + error.message;
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem("xds-console-token", input.value.trim());
  input.value = "";
});
document.getElementById("group-select").addEventListener("change", () => { shownGroup = ""; });
poll();

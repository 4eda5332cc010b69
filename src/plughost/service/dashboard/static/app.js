// plughost dashboard: vanilla JS, no build step. Live updates come from the
// host's event streams, actions go through fetch. Every string from the host is
// put into the page as text; only the readme renderer makes markup, from
// HTML-escaped input.
//
// Every request carries the session token the sign-in redirect put in the URL
// fragment: the cookie alone reaches any server on 127.0.0.1, the token only
// this page (the tab's sessionStorage belongs to this origin).

import { barChart } from "./chart.js";
import { renderMarkdown } from "./markdown.js";

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const $ = (selector, root = document) => root.querySelector(selector);

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
}

function fmtDateTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })} ${fmtTime(iso)}`;
}

function fmtDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime())
    ? String(iso)
    : d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

function fmtRelative(iso) {
  if (!iso) return "";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  const text = abs < 1 ? "now" : abs < 60 ? `${abs.toFixed(abs < 10 ? 1 : 0)} s`
    : abs < 3600 ? `${Math.round(abs / 60)} min` : `${Math.round(abs / 3600)} h`;
  if (text === "now") return text;
  return seconds > 0 ? `in ${text}` : `${text} ago`;
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function fmtCount(n) {
  return new Intl.NumberFormat().format(n ?? 0);
}

function firstLine(text, max = 140) {
  const line = String(text ?? "").split("\n")[0];
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

const SESSION_HEADER = "X-Plughost-Session";

const session = (() => {
  const key = "plughost-session";
  const handed = new RegExp(`^#${key}=([\\w-]+)$`).exec(location.hash);
  if (handed) {
    sessionStorage.setItem(key, handed[1]);
    history.replaceState(null, "", location.pathname + location.search); // out of sight
  }
  return sessionStorage.getItem(key) ?? "";
})();

class ApiError extends Error {
  constructor(status, problem) {
    const title = problem?.title ?? `HTTP ${status}`;
    const detail = problem?.detail ?? (typeof problem === "string" ? problem : "");
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.suggestions = problem?.suggestions ?? [];
    this.errorType = problem?.errorType ?? "";
  }
}

async function api(path, { method = "GET", body } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", [SESSION_HEADER]: session },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") ?? "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const enc = encodeURIComponent;

// Server-sent events through fetch (EventSource cannot send the session header).
// Like EventSource, it reconnects after a drop (or a 5xx) until closed; a 4xx
// answer (refused, or gone) ends it.
function eventStream(path, { onOpen, onDown, onMessage }) {
  let controller = null;
  let timer = null;
  let closed = false;

  function dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) onMessage(name, data.join("\n"));
  }

  async function connect() {
    controller = new AbortController();
    let refused = null;
    try {
      const response = await fetch(path, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/event-stream", [SESSION_HEADER]: session },
        signal: controller.signal,
      });
      if (response.status >= 400 && response.status < 500) {
        const type = response.headers.get("content-type") ?? "";
        refused = new ApiError(response.status, type.includes("json") ? await response.json() : null);
      } else if (response.ok && response.body) {
        onOpen?.();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = (buffer + value).replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      }
    } catch {
      // dropped: reconnect below
    }
    if (closed) return;
    onDown?.(refused);
    if (!refused) timer = setTimeout(connect, 1500);
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      controller?.abort();
    },
  };
}

// ---------------------------------------------------------------------------
// Shared state and the live event stream
// ---------------------------------------------------------------------------

const state = {
  summary: null,
  plugins: new Map(), // id -> plugin view (info + crash + recovery)
  dev: new Map(), // id -> dev server state
  listeners: new Set(), // (name, payload) => void, the current view's
};

const PHASE_KIND = {
  Running: "ok",
  Degraded: "warn",
  Recovering: "warn",
  Failed: "bad",
  BuildFailed: "bad",
  Stopped: "off",
  Installed: "off",
  Uninstalled: "off",
  Installing: "busy",
  Building: "busy",
  Validating: "busy",
  Starting: "busy",
  Stopping: "busy",
  Uninstalling: "busy",
};

const EVENT_NAMES = [
  "plugin/state_change", "plugin/crash", "plugin/recovered", "plugin/crash_recovery_failed",
  "plugin/failed_retry", "plugin/rolled_back", "plugin/init_complete",
  "plugin/install_started", "plugin/install_finished", "plugin/install_error",
  "plugin/update_started", "plugin/update_complete", "plugin/update_error",
  "plugin/dev_install_start", "plugin/dev_install_complete", "plugin/dev_install_error",
  "plugin/dev_reload_start", "plugin/dev_reload_complete", "plugin/dev_reload_error",
  "plugin/devserver/status", "plugin/devserver/error", "plugin/state_write_error",
  "plugin/deprecated_protocol",
];

async function refreshPlugins() {
  const list = await api("/v1/ui/plugins");
  state.plugins = new Map(list.map((p) => [p.id, p]));
  updateCounts();
  return list;
}

const refreshPlugin = (() => {
  const pending = new Map();
  return (id) => {
    if (pending.has(id)) return pending.get(id);
    const job = new Promise((resolve) => setTimeout(resolve, 60))
      .then(() => api(`/v1/ui/plugins/${enc(id)}`))
      .then((p) => {
        state.plugins.set(p.id, p);
        emit("local/plugin", p);
        updateCounts();
      })
      .catch((err) => {
        if (err.status === 404 && state.plugins.delete(id)) emit("local/removed", { pluginID: id });
      })
      .finally(() => pending.delete(id));
    pending.set(id, job);
    return job;
  };
})();

function emit(name, payload) {
  for (const listener of state.listeners) {
    try {
      listener(name, payload);
    } catch (err) {
      console.error(err);
    }
  }
}

function updateCounts() {
  const all = [...state.plugins.values()];
  const running = all.filter((p) => p.phase === "Running").length;
  const node = $("#host-counts");
  if (node) node.textContent = `${running} of ${all.length} running`;
}

function setConnection(kind, label) {
  const node = $("#conn");
  node.dataset.state = kind;
  $(".conn-label", node).textContent = label;
}

const KNOWN_EVENTS = new Set(EVENT_NAMES);

function connectEvents() {
  let wasDown = false;
  return eventStream("/v1/ui/events", {
    onOpen() {
      setConnection("live", "Live");
      if (wasDown) {
        wasDown = false;
        refreshPlugins().then(() => emit("local/resync", {})).catch(() => {});
      }
    },
    onDown(refused) {
      wasDown = true;
      if (!refused) {
        setConnection("down", "Reconnecting…");
        return;
      }
      setConnection("down", [401, 403].includes(refused.status) ? "Signed out" : "Disconnected");
      errorToast(refused, "No live updates");
    },
    onMessage(name, data) {
      if (!KNOWN_EVENTS.has(name)) return;
      let event;
      try {
        event = JSON.parse(data);
      } catch {
        return;
      }
      onEvent(name, event.payload ?? {}, event);
    },
  });
}

function onEvent(name, p) {
  const id = p.pluginID;
  if (name === "plugin/state_change" && id) {
    const known = state.plugins.get(id);
    if (known) {
      known.phase = p.to;
      if (p.to === "Running") known.recovery = { ...(known.recovery ?? {}), recovering: false };
    }
    if (p.to === "Uninstalled") state.plugins.delete(id);
    refreshPlugin(id);
    updateCounts();
  } else if (name === "plugin/crash" && id) {
    const known = state.plugins.get(id);
    if (known) known.crash = p;
    crashToast(p);
    refreshPlugin(id);
  } else if (name === "plugin/recovered" && id) {
    toast({ kind: "ok", title: `${id} recovered`, body: `Running again after attempt ${p.attempt}.` });
    refreshPlugin(id);
  } else if (name === "plugin/crash_recovery_failed" && id) {
    toast({ kind: "bad", title: `${id} could not be recovered`, body: firstLine(p.reason, 200), sticky: true });
    refreshPlugin(id);
  } else if (name === "plugin/failed_retry" && id) {
    refreshPlugin(id);
  } else if (name === "plugin/rolled_back" && id) {
    toast({ kind: "warn", title: `${id} rolled back`, body: firstLine(p.reason ?? "", 200) });
    refreshPlugin(id);
  } else if (name === "plugin/install_finished" && id) {
    refreshPlugin(id);
  } else if (name === "plugin/devserver/status" && id) {
    state.dev.set(id, p);
  } else if (name === "plugin/init_complete") {
    refreshPlugins().then(() => emit("local/resync", {})).catch(() => {});
  }
  emit(name, p);
}

// ---------------------------------------------------------------------------
// Toasts and the confirmation dialog
// ---------------------------------------------------------------------------

function toast({ kind = "info", title, body = "", details = null, sticky = false, testid }) {
  const close = h("button", { class: "toast-close", "aria-label": "Dismiss", type: "button" }, "×");
  const node = h("div", { class: `toast ${kind}`, role: kind === "bad" ? "alert" : "status",
    dataset: testid ? { testid } : undefined },
  h("div", { class: "toast-head" }, h("strong", {}, title), close),
  body ? h("div", { class: "toast-body" }, body) : null,
  details);
  close.addEventListener("click", () => node.remove());
  const box = $("#toasts");
  box.prepend(node);
  while (box.children.length > 5) box.lastElementChild.remove();
  if (!sticky) setTimeout(() => node.remove(), kind === "bad" ? 15000 : 7000);
  return node;
}

function crashSummary(c) {
  const why = c.signal ? `signal ${c.signal}` : c.exitCode !== null && c.exitCode !== undefined
    ? `exit code ${c.exitCode}` : "no exit status";
  const parts = [why, `attempt ${c.attempt ?? 1}/${c.maxAttempts ?? "?"}`];
  if (c.nextRetryAt) parts.push(`next retry ${fmtTime(c.nextRetryAt)}`);
  return parts.join(" · ");
}

function crashToast(c) {
  const lines = (c.lines ?? []).slice(-8);
  const details = lines.length
    ? h("details", { class: "toast-details" }, h("summary", {}, "Last log lines"),
      h("pre", {}, lines.join("\n")))
    : null;
  toast({
    kind: "bad",
    title: `${c.pluginID} ${c.kind === "hung" ? "hung" : "crashed"}`,
    body: `${crashSummary(c)}${c.reason ? ` — ${firstLine(c.reason, 120)}` : ""}`,
    details,
    testid: "crash-toast",
  });
}

function confirmAction({ title, body, ok = "Confirm", danger = false }) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-body").textContent = body;
  const okButton = $("#confirm-ok");
  okButton.textContent = ok;
  okButton.className = `btn ${danger ? "danger" : "primary"}`;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

function errorToast(err, title = "Action failed") {
  const suggestions = err.suggestions?.length
    ? h("ul", { class: "toast-hints" }, err.suggestions.map((s) => h("li", {}, s)))
    : null;
  toast({ kind: "bad", title: err.title && err.title !== "HTTP error" ? err.title : title,
    body: err.detail || err.message, details: suggestions });
}

// ---------------------------------------------------------------------------
// Plugin actions (list and plugin page)
// ---------------------------------------------------------------------------

const ACTIONS = {
  reload: {
    label: "Reload", method: "POST", path: (id) => `/v1/plugins/${enc(id)}/reload`,
    confirm: (p) => ({ title: `Reload ${p.name}?`, body: "The plugin's process is stopped and started again.", ok: "Reload" }),
  },
  retry: {
    label: "Retry", method: "POST", path: (id) => `/v1/plugins/${enc(id)}/retry`,
    confirm: (p) => ({ title: `Retry ${p.name}?`, body: "Start it again now, with a fresh crash budget.", ok: "Retry" }),
  },
  enable: {
    label: "Enable", method: "PUT", body: { enabled: true }, path: (id) => `/v1/plugins/${enc(id)}/enabled`,
    confirm: (p) => ({ title: `Enable ${p.name}?`, body: "It is started now and whenever the host starts.", ok: "Enable" }),
  },
  disable: {
    label: "Disable", method: "PUT", body: { enabled: false }, path: (id) => `/v1/plugins/${enc(id)}/enabled`,
    confirm: (p) => ({ title: `Disable ${p.name}?`, body: "It is stopped now and stays stopped until enabled again.", ok: "Disable" }),
  },
  uninstall: {
    label: "Uninstall", method: "DELETE", path: (id) => `/v1/plugins/${enc(id)}`, danger: true,
    confirm: (p) => ({ title: `Uninstall ${p.name}?`, body: `This stops ${p.id} and deletes its files and logs. It cannot be undone.`, ok: "Uninstall", danger: true }),
  },
};

function availableActions(p) {
  const active = ["Running", "Degraded"].includes(p.phase);
  const list = [];
  if (active) list.push("reload");
  if (["Failed", "BuildFailed", "Recovering", "Stopped", "Installed"].includes(p.phase) && p.enabled) list.push("retry");
  list.push(p.enabled ? "disable" : "enable");
  list.push("uninstall");
  return list;
}

async function runAction(name, plugin, button) {
  const action = ACTIONS[name];
  if (!(await confirmAction(action.confirm(plugin)))) return;
  if (button) {
    button.disabled = true;
    button.classList.add("working");
  }
  try {
    await api(action.path(plugin.id), { method: action.method, body: action.body });
    if (name === "uninstall") {
      toast({ kind: "ok", title: `${plugin.name} uninstalled` });
      state.plugins.delete(plugin.id);
      emit("local/removed", { pluginID: plugin.id });
      updateCounts();
    } else {
      await refreshPlugin(plugin.id);
    }
  } catch (err) {
    errorToast(err, `${action.label} failed`);
    refreshPlugin(plugin.id);
  } finally {
    if (button && button.isConnected) {
      button.disabled = false;
      button.classList.remove("working");
    }
  }
}

function actionButtons(p, { compact = false } = {}) {
  return h("div", { class: `actions${compact ? " compact" : ""}` },
    availableActions(p).map((name) => {
      const action = ACTIONS[name];
      const button = h("button", {
        type: "button",
        class: `btn ${compact ? "small" : ""} ${action.danger ? "danger-outline" : ""}`,
        dataset: { action: name },
      }, action.label);
      button.addEventListener("click", (e) => {
        e.preventDefault();
        e.stopPropagation();
        runAction(name, p, button);
      });
      return button;
    }));
}

function phaseBadge(phase, still = false) {
  return h("span", { class: `badge ${PHASE_KIND[phase] ?? "off"}${still ? " static" : ""}`, dataset: { phase } },
    h("span", { class: "badge-dot", "aria-hidden": "true" }), phase);
}

function recoveryNote(p) {
  const c = p.crash;
  if (p.phase === "Recovering" && c) {
    const next = c.nextRetryAt ? ` · retry ${fmtRelative(c.nextRetryAt)}` : "";
    return h("div", { class: "note warn" }, `${c.kind ?? "crashed"} · attempt ${p.recovery?.attempt || c.attempt || 1}/${c.maxAttempts ?? p.recovery?.maxAttempts ?? "?"}${next}`);
  }
  return null;
}

// ---------------------------------------------------------------------------
// View: the plugin list
// ---------------------------------------------------------------------------

function viewPlugins(root) {
  const tbody = h("tbody");
  const empty = h("div", { class: "empty", hidden: true },
    h("h3", {}, "No plugins installed"),
    h("p", {}, "Install one from the ", h("a", { href: "#/marketplace" }, "marketplace"), "."));
  const table = h("table", { class: "table plugins-table" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Plugin"), h("th", {}, "Version"), h("th", {}, "Phase"),
      h("th", {}, "Capabilities"), h("th", {}, "Last error"), h("th", { class: "right" }, "Actions"))),
    tbody);

  const counts = h("div", { class: "legend", dataset: { testid: "phase-counts" } });
  clear(root,
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Plugins"),
        h("p", { class: "muted" }, "Everything installed on this host, live.")),
      counts),
    h("div", { class: "card flush" }, table, empty));

  function renderCounts() {
    const groups = new Map();
    for (const p of state.plugins.values()) {
      const kind = PHASE_KIND[p.phase] ?? "off";
      const label = { ok: "running", warn: "recovering", bad: "failed", off: "stopped", busy: "starting" }[kind];
      groups.set(kind, { label, n: (groups.get(kind)?.n ?? 0) + 1 });
    }
    clear(counts, ["ok", "warn", "busy", "bad", "off"].filter((k) => groups.has(k)).map((k) =>
      h("span", { class: `badge ${k} static` }, `${groups.get(k).n} ${groups.get(k).label}`)));
  }

  function row(p) {
    const lines = String(p.lastError ?? "").split("\n").map((l) => l.trim()).filter(Boolean);
    const last = lines.length > 1 ? lines[lines.length - 1] : "";
    const error = lines.length
      ? h("div", { class: "error-text", title: p.lastError }, firstLine(lines[0], 90),
        last && last !== lines[0] ? h("div", { class: "error-detail mono" }, firstLine(last, 90)) : null)
      : h("span", { class: "muted" }, "—");
    return h("tr", { dataset: { plugin: p.id }, class: p.enabled ? "" : "disabled" },
      h("td", { class: "name-cell" },
        h("div", { class: "sub" },
          h("a", { href: `#/plugins/${enc(p.id)}`, class: "plugin-name" }, p.name),
          h("code", {}, p.id),
          p.devMode ? h("span", { class: "chip dev", title: p.devPath }, "dev") : null,
          p.enabled ? null : h("span", { class: "chip" }, "disabled")),
        p.metadata?.description ? h("div", { class: "desc-line", title: p.metadata.description }, firstLine(p.metadata.description, 200)) : null),
      h("td", {}, h("span", { class: "mono" }, p.version)),
      h("td", { class: "phase-cell" }, phaseBadge(p.phase), recoveryNote(p)),
      h("td", {}, h("div", { class: "chips" },
        p.capabilities.length ? p.capabilities.map((c) => h("span", { class: "chip" }, c))
          : h("span", { class: "muted" }, "—"))),
      h("td", { class: "error-cell" }, error),
      h("td", { class: "right" }, actionButtons(p, { compact: true })));
  }

  function render() {
    const list = [...state.plugins.values()].sort((a, b) => a.id.localeCompare(b.id));
    clear(tbody, list.map(row));
    renderCounts();
    empty.hidden = list.length > 0;
    table.hidden = list.length === 0;
  }

  function update(id) {
    const p = state.plugins.get(id);
    const old = $(`tr[data-plugin="${CSS.escape(id)}"]`, tbody);
    if (!p) {
      old?.remove();
      renderCounts();
      return;
    }
    if (old) old.replaceWith(row(p));
    else render();
    renderCounts();
  }

  render();
  refreshPlugins().then(render).catch((err) => errorToast(err, "Cannot list plugins"));
  const ticker = setInterval(() => {
    for (const p of state.plugins.values()) if (p.phase === "Recovering") update(p.id);
  }, 500);
  return {
    onEvent(name, p) {
      if (name === "plugin/state_change") update(p.pluginID);
      else if (name === "local/plugin") update(p.id);
      else if (name === "local/removed") update(p.pluginID);
      else if (name === "local/resync") render();
    },
    dispose() {
      clearInterval(ticker);
    },
  };
}

// ---------------------------------------------------------------------------
// A plugin's settings form: one field per setting the plugin declares
// ---------------------------------------------------------------------------

const sameValue = (a, b) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

function shownValue(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : Array.isArray(value) ? value.map(shownValue).join(", ") : JSON.stringify(value);
}

function settingInput(s, fid) {
  const options = s.options ?? [];
  if (s.type === "toggle") return h("input", { type: "checkbox", id: fid, checked: s.value === true });
  if ((s.type === "select" || s.type === "multi_select") && options.length) {
    const multiple = s.type === "multi_select";
    const chosen = (v) => (multiple ? (s.value ?? []).some((x) => sameValue(x, v)) : sameValue(s.value, v));
    return h("select", { id: fid, multiple },
      options.map((o, i) => h("option", { value: String(i), selected: chosen(o.value), title: o.description || undefined },
        o.label || shownValue(o.value))));
  }
  if (s.sensitive || s.type === "password") {
    return h("input", { type: "password", id: fid, autocomplete: "new-password",
      placeholder: s.hasValue ? "set: type to replace" : "not set" });
  }
  if (s.type === "integer" || s.type === "float") {
    return h("input", { type: "number", id: fid, step: s.type === "integer" ? "1" : "any", value: shownValue(s.value) });
  }
  return h("input", { type: "text", id: fid, value: shownValue(s.value), spellcheck: "false" });
}

function settingField(setting, fid) {
  let s = setting;
  let input = settingInput(s, fid);
  const error = h("div", { class: "field-error", role: "alert", hidden: true, dataset: { testid: "setting-error" } });
  const about = h("p", { class: "muted small setting-about" });
  const slot = h("div", { class: "setting-input" }, input);

  function describe() {
    const parts = [s.description];
    if (!s.redacted && s.default !== null && s.default !== undefined) parts.push(`default: ${shownValue(s.default)}`);
    if (s.type === "password" || s.sensitive) parts.push(s.hasValue ? "a value is set (hidden)" : "no value set");
    clear(about, parts.filter(Boolean).join(" · "));
  }

  const node = h("div", { class: "setting-field", dataset: { setting: s.id, type: s.type } },
    h("label", { for: fid }, s.label || s.id, " ", h("code", { class: "small" }, s.id),
      h("span", { class: "chip small" }, s.type)),
    slot, about, error);
  describe();

  function read() {
    const options = s.options ?? [];
    if (s.type === "toggle") return { value: input.checked, changed: input.checked !== (s.value === true) };
    if (input.tagName === "SELECT") {
      const picked = [...input.selectedOptions].map((o) => options[Number(o.value)]?.value);
      const value = input.multiple ? picked : picked[0];
      return { value, changed: !sameValue(value, s.value) };
    }
    if (input.type === "password") return { value: input.value, changed: input.value !== "" };
    if (input.type === "number") {
      const raw = input.value.trim();
      const number = raw === "" ? Number.NaN : Number(raw);
      // Not a number: sent as typed, so the host says what the setting needs.
      const value = Number.isFinite(number) ? number : input.value;
      return { value, changed: !sameValue(value, s.value) };
    }
    return { value: input.value, changed: input.value !== shownValue(s.value) };
  }

  function update(next) {
    s = next;
    const fresh = settingInput(s, fid);
    input.replaceWith(fresh);
    input = fresh;
    describe();
  }

  function showError(err) {
    error.hidden = !err;
    if (!err) {
      error.replaceChildren();
      node.classList.remove("invalid");
      return;
    }
    node.classList.add("invalid");
    clear(error, err.detail || err.message,
      err.suggestions?.length ? h("ul", { class: "hints" }, err.suggestions.map((t) => h("li", {}, t))) : null);
  }

  return { node, read, update, showError, get setting() { return s; } };
}

// ---------------------------------------------------------------------------
// View: one plugin
// ---------------------------------------------------------------------------

const LEVELS = ["trace", "debug", "info", "warn", "error"];
const MAX_LOG_LINES = 500;

function permissionList(lines, testid) {
  return h("ul", { class: "permissions", dataset: { testid } }, lines.map((l) => h("li", {}, l)));
}

// Grant what the installed version asks for: a held install or update then starts.
async function grantPermissions(plugin, button) {
  const perms = plugin.permissions ?? {};
  const ok = await confirmAction({
    title: `Grant ${plugin.name ?? plugin.id} these permissions?`,
    body: `${plugin.id} ${plugin.version} asks for more than was granted:\n${(perms.more ?? []).map((l) => `• ${l}`).join("\n")}`,
    ok: "Grant",
  });
  if (!ok) return false;
  if (button) button.disabled = true;
  try {
    const info = await api(`/v1/plugins/${enc(plugin.id)}/grant`, { method: "POST" });
    toast({ kind: info.phase === "Running" ? "ok" : "warn", title: `Granted ${plugin.id} ${info.version}`,
      body: info.phase === "Running" ? "The plugin is running." : `Phase ${info.phase}` });
    return true;
  } catch (err) {
    errorToast(err, "Grant failed");
    return false;
  } finally {
    if (button && button.isConnected) button.disabled = false;
    await refreshPlugin(plugin.id).catch(() => {});
  }
}

function viewPlugin(root, id) {
  let plugin = state.plugins.get(id);
  const head = h("div", { class: "page-head" });
  const meta = h("dl", { class: "meta pairs" });
  const crashCard = h("section", { class: "card crash", hidden: true, dataset: { testid: "crash-panel" } });
  const permissionsCard = h("section", { class: "card permissions-card", dataset: { testid: "permissions-panel" } });
  const servicesCard = h("section", { class: "card services-card", dataset: { testid: "services-panel" } });
  const settingsCard = h("section", { class: "card settings-card", hidden: true, dataset: { testid: "settings-panel" } });
  const historyBody = h("tbody");
  const logBox = h("div", { class: "logs", role: "log", "aria-label": "Log lines", dataset: { testid: "logs" } });
  const levelSelect = h("select", { "aria-label": "Level", dataset: { testid: "log-level" } },
    h("option", { value: "" }, "All levels"),
    LEVELS.slice(1).map((l) => h("option", { value: l }, l === "error" ? "error" : `${l} and above`)));
  const search = h("input", { type: "search", placeholder: "Search (regular expression)",
    "aria-label": "Search logs", dataset: { testid: "log-search" } });
  const follow = h("input", { type: "checkbox", checked: true });
  const logStatus = h("div", { class: "muted small log-status" });
  let logSource = null;
  let matcher = null;

  clear(root,
    h("a", { href: "#/plugins", class: "back" }, "← All plugins"),
    head,
    h("div", { class: "grid two" },
      h("div", { class: "stack" },
        h("section", { class: "card" }, h("h2", {}, "Details"), meta),
        permissionsCard,
        settingsCard,
        servicesCard,
        crashCard),
      h("div", { class: "stack" },
        h("section", { class: "card" },
          h("div", { class: "card-head" },
            h("h2", {}, "Log ", h("span", { class: "live-tag" }, "live")),
            h("div", { class: "toolbar" }, levelSelect, search,
              h("label", { class: "check" }, follow, "Follow"))),
          logBox, logStatus),
        h("section", { class: "card" },
          h("h2", {}, "State history ", h("span", { class: "muted small" }, "last 50, newest first")),
          h("div", { class: "scroll" },
            h("table", { class: "table compact history", dataset: { testid: "history" } },
              h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Transition"), h("th", {}, "Reason"))),
              historyBody))))));

  function renderHead() {
    if (!plugin) return;
    clear(head,
      h("div", {},
        h("h1", {}, plugin.name, " ", phaseBadge(plugin.phase)),
        h("p", { class: "muted" }, h("code", {}, plugin.id), ` · version ${plugin.version}`,
          plugin.devMode ? " · dev mode" : "", plugin.enabled ? "" : " · disabled"),
        recoveryNote(plugin)),
      actionButtons(plugin));
  }

  function renderMeta() {
    if (!plugin) return;
    const m = plugin.metadata ?? {};
    const author = m.author?.name ? [m.author.name, m.author.email ? ` <${m.author.email}>` : ""].join("") : "";
    const rows = [
      ["Description", m.description, true],
      ["Capabilities", h("div", { class: "chips" },
        plugin.capabilities.length ? plugin.capabilities.map((c) => h("span", { class: "chip" }, c)) : "—",
        plugin.capabilitiesDiffer
          ? h("span", { class: "chip warn", dataset: { testid: "declared-capabilities" },
            title: "The plugin reported other capabilities than its plugin.yaml declares" },
          `≠ plugin.yaml: ${(plugin.declaredCapabilities ?? []).join(", ") || "none"}`)
          : null)],
      ["Category", m.category],
      ["Tags", (m.tags ?? []).join(", ")],
      ["Author", author],
      ["License", m.license],
      ["Protocol", plugin.protocolVersion ?? "—"],
      ["PID", plugin.pid ?? "—"],
      ["Enabled", plugin.enabled ? "yes" : "no"],
      ["Errors", plugin.errorCount ? String(plugin.errorCount) : null],
      ["Installed", fmtDateTime(plugin.installedAt), true],
      ["Dev source", plugin.devMode ? plugin.devPath : null, true],
      ["Last error", plugin.lastError ? h("pre", { class: "error-text" }, plugin.lastError) : null, true],
    ];
    clear(meta, rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v, wide]) => [h("dt", { class: wide ? "wide" : "" }, k),
        h("dd", { class: wide ? "wide" : "", dataset: { field: k.toLowerCase() } }, v)]));
  }

  function renderPermissions() {
    const perms = plugin?.permissions;
    if (!perms) return;
    const more = perms.more ?? [];
    const grant = h("button", { type: "button", class: "btn primary", dataset: { testid: "grant" } }, "Grant");
    grant.addEventListener("click", async () => {
      if (await grantPermissions(plugin, grant)) load();
    });
    clear(permissionsCard,
      h("h2", {}, "Permissions"),
      perms.asked
        ? [h("h3", {}, "Granted"), permissionList(perms.granted, "granted")]
        : h("p", { class: "muted" }, "None declared: it runs unconfined, like any program of this user."),
      more.length
        ? h("div", { class: "held", dataset: { testid: "held" } },
          h("p", {}, h("strong", {}, `Held: version ${plugin.version} asks for more than was granted`)),
          permissionList(more, "more"), grant)
        : null,
      h("p", { class: "muted small", dataset: { testid: "enforcement" } }, `Sandbox: ${perms.enforcement}`));
  }

  function renderCrash() {
    const c = plugin?.crash;
    crashCard.hidden = !c;
    if (!c) return;
    const recovering = plugin.phase === "Recovering";
    clear(crashCard,
      h("div", { class: "card-head" },
        h("h2", {}, c.kind === "hung" ? "Last hang" : "Last crash"),
        h("span", { class: `badge ${recovering ? "warn" : plugin.phase === "Running" ? "ok" : "bad"}` },
          recovering ? "recovering" : plugin.phase === "Running" ? "recovered" : plugin.phase)),
      h("dl", { class: "meta pairs" },
        h("dt", {}, "Kind"), h("dd", { dataset: { field: "kind" } }, c.kind ?? "crashed"),
        h("dt", {}, c.signal ? "Signal" : "Exit code"),
        h("dd", { dataset: { field: "exit" } }, c.signal ?? (c.exitCode ?? "—")),
        h("dt", {}, "Attempt"), h("dd", { dataset: { field: "attempt" } }, `${plugin.recovery?.recovering ? plugin.recovery.attempt || c.attempt : c.attempt} of ${c.maxAttempts}`),
        c.nextRetryAt ? [h("dt", {}, "Next retry"), h("dd", { dataset: { field: "next-retry" } }, `${fmtTime(c.nextRetryAt)}${recovering ? ` (${fmtRelative(c.nextRetryAt)})` : ""}`)] : null,
        h("dt", { class: "wide" }, "Reason"), h("dd", { class: "wide" }, c.reason ?? ""),
        c.crashesInWindow ? [h("dt", { class: "wide" }, "Crashes"), h("dd", { class: "wide" }, `${c.crashesInWindow} in the budget window`)] : null),
      c.lines?.length ? h("details", { class: "crash-lines" },
        h("summary", {}, `Last ${c.lines.length} log lines (secrets redacted)`),
        h("pre", {}, c.lines.join("\n"))) : null);
  }

  // What the running plugin serves and answers about itself (GET .../introspect).
  let servicesLoad = 0;

  function servicesNote(text) {
    clear(servicesCard, h("h2", {}, "Services"),
      h("p", { class: "muted small", dataset: { testid: "services-note" } }, text));
  }

  function renderServices(d) {
    const lc = d.lifecycle;
    const got = lc?.info;
    const rows = [
      ["Protocol", d.protocolVersion ?? "—"],
      ["Address", d.address ? `${d.address.network} ${d.address.address}` : null, true],
      ["Lifecycle", lc ? lc.service : (d.errors?.lifecycle ? null : "none"), true],
      ["Plugin ID", got?.pluginID],
      ["Version", got?.version],
      ["SDK protocol", got?.sdkProtocolVersion],
      ["Reports", lc?.capabilities
        ? (lc.capabilities.length ? h("div", { class: "chips" }, lc.capabilities.map((c) => h("span", { class: "chip" }, c))) : "none")
        : null, true],
    ];
    const errors = Object.entries(d.errors ?? {});
    clear(servicesCard,
      h("div", { class: "card-head" },
        h("h2", {}, "Services"),
        h("span", { class: "muted small" },
          d.reflection ? "from server reflection" : "no server reflection: the ones every plugin serves")),
      h("ul", { class: "service-list", dataset: { testid: "services" } },
        (d.services ?? []).map((name) => h("li", {}, h("code", {}, name)))),
      h("dl", { class: "meta pairs", dataset: { testid: "lifecycle" } },
        rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
          .map(([k, v, wide]) => [h("dt", { class: wide ? "wide" : "" }, k),
            h("dd", { class: wide ? "wide" : "", dataset: { field: k.toLowerCase().replace(/ /g, "-") } }, v)])),
      errors.length
        ? h("ul", { class: "service-errors error-text" }, errors.map(([part, text]) => h("li", {}, `${part}: ${text}`)))
        : null);
  }

  async function loadServices() {
    const mine = ++servicesLoad;
    if (plugin && !["Running", "Degraded", "Starting"].includes(plugin.phase)) {
      servicesNote("Not running: start it to see what it serves.");
      return;
    }
    try {
      const data = await api(`/v1/plugins/${enc(id)}/introspect`);
      if (mine === servicesLoad) renderServices(data);
    } catch (err) {
      if (mine !== servicesLoad) return;
      servicesNote(err.status === 503 ? "Not running: start it to see what it serves." : err.message);
    }
  }

  // The plugin's own settings (Omniview SDK plugins), as a form built from its definitions.
  let settingsLoad = 0;
  let settingsShown = false;

  function hasSettings() {
    return Boolean(plugin?.capabilities?.includes("settings"));
  }

  function settingsNote(...children) {
    clear(settingsCard, h("h2", {}, "Settings"),
      h("div", { class: "muted small", dataset: { testid: "settings-note" } }, children));
  }

  function settingsProblem(err) {
    settingsNote(h("div", { class: "error-text" }, h("strong", {}, err.title || "Cannot load the settings"),
      err.detail ? `: ${err.detail}` : ""),
    err.suggestions?.length ? h("ul", { class: "hints" }, err.suggestions.map((s) => h("li", {}, s))) : null);
  }

  async function loadSettings() {
    const mine = ++settingsLoad;
    settingsShown = hasSettings();
    settingsCard.hidden = !settingsShown;
    if (!settingsShown) return;
    if (!["Running", "Degraded"].includes(plugin.phase)) {
      settingsNote("Not running: start it to see and change its settings.");
      return;
    }
    try {
      const list = await api(`/v1/plugins/${enc(id)}/settings`);
      if (mine === settingsLoad) renderSettings(list);
    } catch (err) {
      if (mine === settingsLoad) settingsProblem(err);
    }
  }

  function renderSettings(list) {
    if (!list.length) {
      settingsNote("This plugin declares no settings.");
      return;
    }
    const fields = list.map((s, index) => settingField(s, `setting-${index}`));
    const save = h("button", { type: "submit", class: "btn primary", dataset: { testid: "settings-save" } }, "Save");
    const status = h("span", { class: "muted small", role: "status", dataset: { testid: "settings-status" } });
    const form = h("form", { class: "settings-form", novalidate: true },
      fields.map((f) => f.node),
      h("div", { class: "settings-actions" }, save, status));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const f of fields) f.showError(null);
      const changes = fields.map((f) => ({ f, ...f.read() })).filter((c) => c.changed);
      if (!changes.length) {
        status.textContent = "Nothing changed.";
        return;
      }
      save.disabled = true;
      status.textContent = "Saving…";
      let refused = 0;
      for (const c of changes) {
        try {
          const path = `/v1/plugins/${enc(id)}/settings/${enc(c.f.setting.id)}`;
          c.f.update(await api(path, { method: "PUT", body: { value: c.value } }));
        } catch (err) {
          refused += 1;
          c.f.showError(err);
        }
      }
      const saved = changes.length - refused;
      status.textContent = refused
        ? `${saved} saved, ${refused} not saved: see below.`
        : `Saved ${saved} setting${saved === 1 ? "" : "s"}.`;
      save.disabled = false;
    });
    clear(settingsCard,
      h("div", { class: "card-head" }, h("h2", {}, "Settings"),
        h("span", { class: "muted small" }, "the plugin's own, as it declares them")),
      form);
  }

  function historyRow(t) {
    return h("tr", {},
      h("td", { class: "mono nowrap" }, fmtTime(t.timestamp)),
      h("td", { class: "nowrap" }, phaseBadge(t.from, true), h("span", { class: "arrow" }, "→"), phaseBadge(t.to, true)),
      h("td", { class: "reason" }, t.reason ?? ""));
  }

  async function loadHistory() {
    const history = await api(`/v1/plugins/${enc(id)}/history`);
    clear(historyBody, history.slice().reverse().map(historyRow));
  }

  function logLine(e) {
    return h("div", { class: `line level-${e.level}`, dataset: { level: e.level } },
      h("span", { class: "ts" }, fmtTime(e.timestamp)),
      h("span", { class: "lvl" }, e.level),
      h("span", { class: "src" }, e.source),
      h("span", { class: "msg" }, e.message,
        e.fields && Object.keys(e.fields).length
          ? h("span", { class: "fields" }, ` ${Object.entries(e.fields).filter(([k]) => !k.startsWith("@")).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ")}`)
          : null));
  }

  function matches(e) {
    // The service's level filter means "this level and above"; live lines follow suit.
    if (levelSelect.value && LEVELS.indexOf(e.level) < LEVELS.indexOf(levelSelect.value)) return false;
    if (!matcher) return true;
    const fields = e.fields ? JSON.stringify(e.fields) : "";
    return matcher.test(e.message) || matcher.test(fields);
  }

  function addLogs(entries) {
    const atBottom = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 24;
    append(logBox, entries.map(logLine));
    while (logBox.childElementCount > MAX_LOG_LINES) logBox.firstElementChild.remove();
    if (follow.checked && (atBottom || entries.length > 1)) logBox.scrollTop = logBox.scrollHeight;
    logBox.classList.toggle("is-empty", logBox.childElementCount === 0);
  }

  async function loadLogs() {
    const params = new URLSearchParams({ n: "300" });
    matcher = null;
    if (search.value.trim()) {
      try {
        matcher = new RegExp(search.value.trim());
      } catch {
        logStatus.textContent = "not a valid regular expression";
        return;
      }
      params.set("grep", search.value.trim());
    }
    if (levelSelect.value) params.set("level", levelSelect.value);
    logStatus.textContent = "";
    try {
      const entries = await api(`/v1/plugins/${enc(id)}/logs?${params}`);
      logBox.replaceChildren();
      addLogs(entries);
      logBox.scrollTop = logBox.scrollHeight;
      logStatus.textContent = entries.length ? "" : "no matching lines yet";
    } catch (err) {
      logStatus.textContent = err.message;
    }
  }

  function streamLogs() {
    logSource?.close();
    logSource = eventStream(`/v1/plugins/${enc(id)}/logs/stream`, {
      onMessage(name, data) {
        if (name !== "log") return;
        const entry = JSON.parse(data);
        if (!matches(entry)) return;
        logStatus.textContent = "";
        addLogs([entry]);
      },
    });
  }

  levelSelect.addEventListener("change", loadLogs);
  search.addEventListener("input", debounce(loadLogs, 250));

  function renderAll() {
    renderHead();
    renderMeta();
    renderPermissions();
    renderCrash();
  }

  async function load() {
    try {
      plugin = await api(`/v1/ui/plugins/${enc(id)}`);
      state.plugins.set(id, plugin);
    } catch (err) {
      clear(root, h("a", { href: "#/plugins", class: "back" }, "← All plugins"),
        h("div", { class: "empty" }, h("h3", {}, err.status === 404 ? `No plugin ${id}` : "Cannot load the plugin"),
          h("p", {}, err.message)));
      return;
    }
    renderAll();
    loadServices(); // may wait for a starting plugin: the log does not wait for it
    loadSettings();
    await Promise.all([loadHistory(), loadLogs()]);
    streamLogs();
  }

  if (plugin) renderAll();
  servicesNote("Loading…");
  load();
  const ticker = setInterval(() => {
    if (plugin?.phase === "Recovering") {
      renderHead();
      renderCrash();
    }
  }, 500);

  return {
    onEvent(name, p) {
      if (p.pluginID !== id && p.id !== id) return;
      if (name === "plugin/state_change") {
        historyBody.prepend(historyRow(p));
        while (historyBody.childElementCount > 50) historyBody.lastElementChild.remove();
        if (plugin) plugin.phase = p.to;
        renderHead();
        renderCrash();
        // A new process (or none): what it serves may have changed.
        if ((p.to === "Running" && p.from !== "Degraded") || !["Running", "Degraded"].includes(p.to)) {
          loadServices();
          loadSettings();
        }
      } else if (name === "plugin/crash") {
        if (plugin) plugin.crash = p;
        renderCrash();
      } else if (name === "local/plugin") {
        plugin = p;
        renderAll();
        if (hasSettings() !== settingsShown) loadSettings(); // capabilities are known once it runs
      } else if (name === "local/removed") {
        location.hash = "#/plugins";
      }
    },
    dispose() {
      clearInterval(ticker);
      logSource?.close();
    },
  };
}

// ---------------------------------------------------------------------------
// Installing (marketplace cards, detail page, package files)
// ---------------------------------------------------------------------------

const installs = new Map(); // plugin id -> latest job

function progressBar(job) {
  const known = job.total && job.state === "downloading";
  const pct = known ? Math.min(100, Math.round((job.done / job.total) * 100)) : null;
  const label = {
    queued: "Queued…",
    downloading: pct === null ? "Downloading…" : `Downloading ${pct}% (${fmtBytes(job.done)})`,
    installing: "Verifying and installing…",
    done: job.phase === "Running" ? "Installed · Running" : `Installed · ${job.phase}`,
    error: job.error?.title ?? "Install failed",
  }[job.state];
  const bar = h("div", { class: `progress ${job.state}`, role: "progressbar", "aria-label": label,
    dataset: { testid: "install-progress", state: job.state } },
  h("div", { class: `progress-track${pct === null && !["done", "error"].includes(job.state) ? " indeterminate" : ""}` },
    h("div", { class: "progress-fill" })),
  h("div", { class: "progress-label" }, label));
  if (pct !== null) {
    bar.setAttribute("aria-valuenow", String(pct));
    $(".progress-fill", bar).style.width = `${pct}%`;
  } else if (["done", "error"].includes(job.state)) {
    $(".progress-fill", bar).style.width = "100%";
  }
  return bar;
}

async function startInstall(body, onUpdate) {
  let job = await api("/v1/ui/install", { method: "POST", body });
  const key = body.id ?? body.path;
  installs.set(key, job);
  onUpdate(job);
  while (!["done", "error"].includes(job.state)) {
    await new Promise((resolve) => setTimeout(resolve, 120));
    job = await api(`/v1/ui/jobs/${enc(job.id)}`);
    installs.set(key, job);
    onUpdate(job);
  }
  if (job.state === "done" && job.lastError.startsWith("held:")) {
    // Downloaded and verified, not started: it asks for permissions not granted yet.
    const plugin = await api(`/v1/ui/plugins/${enc(job.pluginID)}`);
    state.plugins.set(plugin.id, plugin);
    const granted = await grantPermissions(plugin, null);
    if (!granted) toast({ kind: "warn", title: `${job.pluginID} ${job.version} is held`,
      body: "Installed but not started: grant its permissions on its page to start it." });
    const after = state.plugins.get(job.pluginID);
    if (after) { job.phase = after.phase; installs.set(key, job); onUpdate(job); }
    refreshPlugins().catch(() => {});
  } else if (job.state === "done") {
    toast({ kind: job.phase === "Running" ? "ok" : "warn",
      title: `Installed ${job.pluginID} ${job.version}`,
      body: job.phase === "Running" ? "The plugin is running." : `Phase ${job.phase}${job.lastError ? `: ${firstLine(job.lastError)}` : ""}` });
    refreshPlugins().catch(() => {});
  } else {
    errorToast({ title: job.error?.title, detail: job.error?.detail, suggestions: job.error?.suggestions ?? [], message: "Install failed" }, "Install failed");
  }
  return job;
}

// A job still running, or finished in the last few seconds, keeps its bar on screen.
function showJob(key, slot) {
  const job = installs.get(key);
  const fresh = job && (!job.finished || Date.now() / 1000 - job.finished < 10);
  if (fresh) clear(slot, progressBar(job));
}

function installButton(plugin, slot, { version, label, small = false } = {}) {
  const installedSame = plugin.installed && (!version ? !plugin.update_available : plugin.installed_version === version);
  const text = label ?? (plugin.update_available && !version ? `Update to ${plugin.latest_version}`
    : installedSame ? "Installed" : "Install");
  const button = h("button", { type: "button", class: `btn ${small ? "small" : installedSame ? "" : "primary"}`,
    disabled: installedSame && !version, dataset: { install: plugin.id } }, text);
  button.addEventListener("click", async (e) => {
    e.preventDefault();
    e.stopPropagation();
    button.disabled = true;
    try {
      await startInstall({ id: plugin.id, version: version ?? null }, (job) => clear(slot, progressBar(job)));
    } catch (err) {
      errorToast(err, "Install failed");
    } finally {
      button.disabled = false;
      emit("local/installed", { pluginID: plugin.id });
    }
  });
  return button;
}

// ---------------------------------------------------------------------------
// View: the marketplace
// ---------------------------------------------------------------------------

const SORTS = [
  ["downloads", "Most downloaded"],
  ["rating", "Top rated"],
  ["updated", "Recently updated"],
  ["name", "Name (A–Z)"],
];

function avatar(name) {
  const letter = (name || "?").trim().charAt(0).toUpperCase();
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return h("span", { class: `avatar hue-${hash % 6}`, "aria-hidden": "true" }, letter);
}

function stars(rating) {
  const full = Math.round(rating ?? 0);
  return h("span", { class: "stars", title: `${(rating ?? 0).toFixed(1)} of 5` },
    "★".repeat(full), h("span", { class: "stars-off" }, "★".repeat(5 - full)));
}

const marketQuery = { q: "", category: "", sort: "downloads" };

function viewMarketplace(root) {
  const q = h("input", { type: "search", placeholder: "Search plugins", value: marketQuery.q,
    "aria-label": "Search the marketplace", dataset: { testid: "market-search" } });
  const category = h("select", { "aria-label": "Category", dataset: { testid: "market-category" } },
    h("option", { value: "" }, "All categories"));
  const sort = h("select", { "aria-label": "Sort", dataset: { testid: "market-sort" } },
    SORTS.map(([value, label]) => h("option", { value, selected: value === marketQuery.sort }, label)));
  const grid = h("div", { class: "cards", dataset: { testid: "market-results" } });
  const status = h("p", { class: "muted" });
  const pathInput = h("input", { type: "text", placeholder: "/path/to/plugin-1.0.0.tar.gz", "aria-label": "Package path" });
  const pathSlot = h("div", { class: "slot" });
  const pathButton = h("button", { type: "button", class: "btn" }, "Install file");

  clear(root,
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Marketplace"),
        h("p", { class: "muted" }, "Find plugins, read about them, install or update them."))),
    h("div", { class: "toolbar wide" }, q, category, sort),
    status, grid,
    h("details", { class: "card file-install" },
      h("summary", {}, "Install a package file from this machine"),
      h("div", { class: "toolbar" }, pathInput, pathButton), pathSlot));

  pathButton.addEventListener("click", async () => {
    if (!pathInput.value.trim()) return;
    pathButton.disabled = true;
    try {
      await startInstall({ path: pathInput.value.trim() }, (job) => clear(pathSlot, progressBar(job)));
    } catch (err) {
      errorToast(err, "Install failed");
    } finally {
      pathButton.disabled = false;
    }
  });

  function card(p) {
    const slot = h("div", { class: "slot" });
    showJob(p.id, slot);
    const status = p.update_available
      ? h("span", { class: "chip warn" }, `update: ${p.installed_version} → ${p.latest_version}`)
      : p.installed ? h("span", { class: "chip ok" }, `installed ${p.installed_version}`) : null;
    return h("article", { class: "card market-card", dataset: { plugin: p.id } },
      h("a", { class: "card-link", href: `#/marketplace/${enc(p.id)}` },
        h("div", { class: "market-head" }, avatar(p.name || p.id),
          h("div", {}, h("h3", {}, p.name || p.id),
            h("div", { class: "muted small" }, p.publisher_name || p.author?.name || "unknown publisher"))),
        h("p", { class: "desc" }, p.description || "No description."),
        h("div", { class: "chips" },
          p.category ? h("span", { class: "chip" }, p.category) : null,
          p.latest_version ? h("span", { class: "chip mono" }, `v${p.latest_version}`) : null,
          p.official ? h("span", { class: "chip ok" }, "official") : null,
          status)),
      h("div", { class: "market-foot" },
        h("span", { class: "muted small" }, `↓ ${fmtCount(p.download_count)}`, " · ", stars(p.average_rating),
          ` (${p.review_count})`),
        installButton(p, slot)),
      slot);
  }

  async function search() {
    marketQuery.q = q.value;
    marketQuery.category = category.value;
    marketQuery.sort = sort.value;
    const params = new URLSearchParams({ q: q.value.trim(), category: category.value, sort: sort.value });
    status.textContent = "Searching…";
    try {
      const found = await api(`/v1/ui/marketplace/plugins?${params}`);
      clear(grid, found.map(card));
      status.textContent = found.length ? `${found.length} plugin${found.length === 1 ? "" : "s"}` : "No plugin matches.";
    } catch (err) {
      grid.replaceChildren();
      clear(status, marketplaceProblem(err));
    }
  }

  async function loadCategories() {
    try {
      const categories = await api("/v1/ui/marketplace/categories");
      append(category, categories.map((c) =>
        h("option", { value: c.category, selected: c.category === marketQuery.category }, `${c.category} (${c.count})`)));
    } catch {
      // the search shows what is wrong
    }
  }

  q.addEventListener("input", debounce(search, 250));
  category.addEventListener("change", search);
  sort.addEventListener("change", search);
  loadCategories().then(search);
  return {
    onEvent(name) {
      if (name === "local/installed") search();
    },
  };
}

function marketplaceProblem(err) {
  if (err.errorType === "settings_missing_config") {
    return h("div", { class: "empty" }, h("h3", {}, "No marketplace configured"),
      h("p", {}, "Set ", h("code", {}, "marketplace_url"), " and ", h("code", {}, "registry_public_key"),
        " in plughost.toml to browse and install plugins."));
  }
  return h("div", { class: "empty" }, h("h3", {}, err.title ?? "Marketplace unavailable"), h("p", {}, err.detail || err.message));
}

// ---------------------------------------------------------------------------
// View: one marketplace plugin
// ---------------------------------------------------------------------------

function viewMarketDetail(root, id) {
  clear(root, h("a", { href: "#/marketplace", class: "back" }, "← Marketplace"), h("p", { class: "muted" }, "Loading…"));
  let disposed = false;

  function review(r) {
    return h("li", { class: "review" },
      h("div", { class: "review-head" }, stars(r.rating), h("strong", {}, r.title || "Review"),
        h("span", { class: "muted small" }, fmtDate(r.created_at))),
      r.body ? h("p", {}, r.body) : null,
      r.response ? h("blockquote", { class: "response" }, h("strong", {}, "Publisher: "), r.response) : null);
  }

  async function load() {
    let data;
    try {
      data = await api(`/v1/ui/marketplace/plugins/${enc(id)}`);
    } catch (err) {
      if (!disposed) clear(root, h("a", { href: "#/marketplace", class: "back" }, "← Marketplace"), marketplaceProblem(err));
      return;
    }
    if (disposed) return;
    const p = data.plugin;
    const slot = h("div", { class: "slot" });
    showJob(p.id, slot);
    const readme = h("article", { class: "markdown", dataset: { testid: "readme" } });
    readme.innerHTML = p.readme ? renderMarkdown(p.readme) : "<p class=\"muted\">This plugin has no readme.</p>";
    const reviews = h("ul", { class: "reviews", dataset: { testid: "reviews" } }, data.reviews.map(review));
    let page = 1;
    const more = h("button", { type: "button", class: "btn small", hidden: data.reviewPages <= 1 }, "More reviews");
    more.addEventListener("click", async () => {
      page += 1;
      const next = await api(`/v1/ui/marketplace/plugins/${enc(id)}/reviews?page=${page}`);
      append(reviews, next.reviews.map(review));
      more.hidden = page >= next.pages;
    });
    const total30 = data.daily.reduce((s, d) => s + d.count, 0);
    const byVersion = data.stats.by_version ?? [];

    clear(root,
      h("a", { href: "#/marketplace", class: "back" }, "← Marketplace"),
      h("div", { class: "page-head detail-head" },
        h("div", { class: "market-head" }, avatar(p.name || p.id),
          h("div", {},
            h("h1", {}, p.name || p.id),
            h("p", { class: "muted" }, h("code", {}, p.id), ` · ${p.publisher_name || p.author?.name || "unknown publisher"}`,
              p.license ? ` · ${p.license}` : "", p.category ? ` · ${p.category}` : ""),
            h("p", {}, p.description))),
        h("div", { class: "detail-actions" },
          h("div", { class: "chips" },
            h("span", { class: "chip mono" }, `latest v${p.latest_version}`),
            p.installed ? h("span", { class: `chip ${p.update_available ? "warn" : "ok"}` }, `installed ${p.installed_version}`) : null),
          installButton(p, slot), slot)),
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("div", { class: "stat-value" }, fmtCount(data.stats.total_count)), h("div", { class: "stat-label" }, "downloads")),
        h("div", { class: "stat" }, h("div", { class: "stat-value" }, fmtCount(total30)), h("div", { class: "stat-label" }, "last 30 days")),
        h("div", { class: "stat" }, h("div", { class: "stat-value" }, (p.average_rating ?? 0).toFixed(1)), h("div", { class: "stat-label" }, `rating · ${p.review_count} reviews`)),
        h("div", { class: "stat" }, h("div", { class: "stat-value" }, String(data.versions.length)), h("div", { class: "stat-label" }, "versions"))),
      h("div", { class: "grid detail" },
        h("section", { class: "card" }, h("h2", {}, "Readme"), readme),
        h("div", { class: "stack" },
          h("section", { class: "card", dataset: { testid: "downloads-chart" } },
            h("h2", {}, "Downloads, last 30 days"), barChart(data.daily, { width: 460, height: 170 }),
            byVersion.length ? h("div", { class: "by-version" }, byVersion.map((v) =>
              h("span", { class: "chip mono" }, `${v.version || "?"}: ${fmtCount(v.count)}`))) : null),
          h("section", { class: "card" }, h("h2", {}, "Versions"),
            h("ul", { class: "versions", dataset: { testid: "versions" } }, data.versions.map((v) => {
              const vslot = h("div", { class: "slot" });
              return h("li", {},
                h("div", { class: "version-head" },
                  h("strong", { class: "mono" }, v.version),
                  h("span", { class: "muted small" }, fmtDate(v.created_at)),
                  v.version === p.installed_version ? h("span", { class: "chip ok" }, "installed")
                    : installButton(p, vslot, { version: v.version, label: `Install ${v.version}`, small: true })),
                v.changelog ? h("p", { class: "small" }, v.changelog) : null,
                vslot);
            }))),
          h("section", { class: "card" }, h("h2", {}, "Reviews"),
            data.reviews.length ? reviews : h("p", { class: "muted" }, "No reviews yet."), more))));
  }

  load();
  return {
    onEvent(name, p) {
      if (name === "local/installed" && p.pluginID === id) load();
    },
    dispose() {
      disposed = true;
    },
  };
}

// ---------------------------------------------------------------------------
// View: dev plugins
// ---------------------------------------------------------------------------

const DEV_KIND = { running: "ok", ready: "ok", building: "busy", starting: "busy", error: "bad", idle: "off", stopped: "off" };

function viewDev(root) {
  const body = h("div", { class: "dev-list", dataset: { testid: "dev-list" } });
  clear(root,
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Dev plugins"),
        h("p", { class: "muted" }, "Plugins installed from their source: rebuilt and reloaded on save."))),
    body);

  function devCard(s) {
    const plugin = state.plugins.get(s.pluginID);
    const errors = s.buildErrors ?? [];
    return h("section", { class: "card dev-card", dataset: { plugin: s.pluginID, status: s.status } },
      h("div", { class: "card-head" },
        h("div", {},
          h("h2", {}, h("a", { href: `#/plugins/${enc(s.pluginID)}` }, plugin?.name ?? s.pluginID), " ",
            plugin ? phaseBadge(plugin.phase) : null),
          h("div", { class: "muted small mono" }, s.devPath || "")),
        h("span", { class: `badge ${DEV_KIND[s.status] ?? "off"}`, dataset: { testid: "build-status" } },
          h("span", { class: "badge-dot", "aria-hidden": "true" }), `build: ${s.status}`)),
      h("dl", { class: "meta inline" },
        h("dt", {}, "Mode"), h("dd", {}, s.mode),
        h("dt", {}, "Last build"), h("dd", { dataset: { testid: "build-duration" } }, fmtDuration(s.lastBuildDuration)),
        h("dt", {}, "Built at"), h("dd", {}, s.lastBuildTime ? fmtTime(s.lastBuildTime) : "–"),
        h("dt", {}, "Reloaded"), h("dd", {}, s.lastReloadAt ? fmtTime(s.lastReloadAt) : "–"),
        h("dt", {}, "Watching"), h("dd", {}, s.watching ? "yes" : "no"),
        s.viteURL ? [h("dt", {}, "UI dev server"), h("dd", {}, s.viteURL)] : null),
      errors.length
        ? h("div", { class: "build-errors", dataset: { testid: "build-errors" } },
          h("h3", {}, `${errors.length} build error${errors.length === 1 ? "" : "s"}`),
          h("ul", {}, errors.map((e) => h("li", {},
            h("code", { class: "where" }, `${e.file}:${e.line}${e.column ? `:${e.column}` : ""}`),
            h("span", { class: "msg" }, e.message)))))
        : s.lastBuildError ? h("pre", { class: "error-text" }, s.lastBuildError) : null,
      errors.length && plugin && ["Running", "Degraded"].includes(plugin.phase)
        ? h("p", { class: "muted small keep-running" }, "The last good build keeps running until the errors are fixed.")
        : null,
      devOutput(s.pluginID));
  }

  function devOutput(id) {
    const pre = h("pre", { class: "dev-output" }, "Loading…");
    const box = h("details", { class: "dev-output-box" }, h("summary", {}, "Dev server output"), pre);
    box.addEventListener("toggle", async () => {
      if (!box.open) return;
      try {
        const lines = await api(`/v1/dev/${enc(id)}/logs?n=60`);
        pre.textContent = lines.length
          ? lines.map((l) => `${fmtTime(l.timestamp)} ${l.source.padEnd(8)} ${l.message}`).join("\n")
          : "No output yet.";
      } catch (err) {
        pre.textContent = err.message;
      }
    });
    return box;
  }

  function render() {
    if (state.summary && !state.summary.devAvailable) {
      clear(body, h("div", { class: "empty" }, h("h3", {}, "Dev mode is not active on this host"),
        h("p", {}, "Install a plugin from its source tree in dev mode to see its builds here.")));
      return;
    }
    const list = [...state.dev.values()].sort((a, b) => a.pluginID.localeCompare(b.pluginID));
    if (!list.length) {
      clear(body, h("div", { class: "empty" }, h("h3", {}, "No dev plugins"),
        h("p", {}, "Plugins installed in dev mode show their build status here.")));
      return;
    }
    clear(body, list.map(devCard));
  }

  async function load() {
    try {
      const list = await api("/v1/dev");
      state.dev = new Map(list.map((s) => [s.pluginID, s]));
    } catch (err) {
      errorToast(err, "Cannot load dev plugins");
    }
    render();
  }

  load();
  return {
    onEvent(name) {
      if (name === "plugin/devserver/status" || name === "local/plugin" || name === "plugin/state_change") render();
      else if (name.startsWith("plugin/dev_") || name === "plugin/devserver/error") load();
    },
  };
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

let current = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [section = "plugins", rawId] = hash.split("/");
  const id = rawId ? decodeURIComponent(rawId) : null;
  current?.dispose?.();
  if (current) state.listeners.delete(current.listener);
  const root = $("#view");
  root.scrollTop = 0;
  window.scrollTo(0, 0);
  let view;
  if (section === "marketplace") view = id ? viewMarketDetail(root, id) : viewMarketplace(root);
  else if (section === "dev") view = viewDev(root);
  else view = id ? viewPlugin(root, id) : viewPlugins(root);
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.classList.toggle("active", tab.dataset.tab === (["marketplace", "dev"].includes(section) ? section : "plugins"));
  }
  const listener = (name, payload) => view.onEvent?.(name, payload);
  state.listeners.add(listener);
  current = { ...view, listener };
  document.title = `plughost · ${section === "marketplace" ? "Marketplace" : section === "dev" ? "Dev plugins" : id ?? "Plugins"}`;
}

async function start() {
  try {
    state.summary = await api("/v1/ui/summary");
    $("#host-root").textContent = state.summary.root;
    $("#host-version").textContent = `plughost ${state.summary.version}`;
  } catch (err) {
    errorToast(err, "Cannot reach the host");
  }
  connectEvents();
  window.addEventListener("hashchange", route);
  route();
  refreshPlugins().catch(() => {});
}

start();

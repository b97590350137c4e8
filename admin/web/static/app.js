// cove's admin page: every change goes to the same /api/v2.0 endpoints that tools use.
// Text from the server is only ever set with textContent, never as HTML.
"use strict";

// APIError is a refusal of the API: its HTTP status and its (English) message.
class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// translate asks cove for an API error in the page's language (POST /message); the English
// message stands if that fails.
async function translate(e) {
  if (!(e instanceof APIError)) return e.message;
  try {
    const resp = await fetch("/message", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ status: e.status, message: e.message }),
    });
    if (resp.ok) return await resp.text();
  } catch (_) { /* the English message stands */ }
  return e.message || String(e.status);
}

function say(id, text) {
  for (const other of ["error", "notice"]) document.getElementById(other).hidden = true;
  const el = document.getElementById(id);
  el.textContent = text;
  el.hidden = false;
  el.scrollIntoView({ block: "nearest" }); // a form far down the page: its answer is up here
}

async function showError(e) { say("error", await translate(e)); }

async function call(method, path, body) {
  const opts = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  const text = await resp.text();
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const m = data && data.errors && data.errors[0] ? data.errors[0].message : "";
    throw new APIError(resp.status, m);
  }
  return data;
}

// Shapes turn a form into the JSON body its endpoint takes. A shape throws a plain Error, whose
// message the page already has in its language, for what the form itself can tell is wrong.
const shapes = {
  project: f => {
    const b = { project_name: f.project_name.value, metadata: { public: f.public.checked ? "true" : "false" } };
    if (f.storage_limit) {
      const mib = Number(f.storage_limit.value);
      b.storage_limit = mib < 0 ? -1 : mib * 1024 * 1024;
    }
    return b;
  },
  member: f => {
    const b = { role_id: Number(f.role_id.value) };
    if (f.kind.value === "g") b.member_group = { group_name: f.name.value };
    else b.member_user = { username: f.name.value };
    return b;
  },
  user: f => ({ username: f.username.value, email: f.email.value, password: f.password.value }),
  password: f => {
    if (f.new_password.value !== f.confirm.value) throw new Error(f.dataset.mismatch);
    return { old_password: f.old_password.value, new_password: f.new_password.value };
  },
  reset: f => ({ new_password: f.new_password.value }),
  forgot: f => ({ email: f.email.value.trim() }),
  resetconfirm: f => {
    if (f.new_password.value !== f.confirm.value) throw new Error(f.dataset.mismatch);
    return { token: f.token.value, new_password: f.new_password.value };
  },
  settings: f => ({
    self_registration: f.self_registration.checked,
    anonymous_pull: f.anonymous_pull.value,
    project_creation_restriction: f.project_creation_restriction.value,
  }),
  gcschedule: f => ({
    schedule: { type: f.type.value, cron: f.cron.value },
    parameters: { delete_untagged: f.delete_untagged.checked, time_window: Number(f.time_window.value), workers: Number(f.workers.value) },
  }),
  gcrun: f => ({
    schedule: { type: "Manual" },
    parameters: { delete_untagged: f.delete_untagged.checked, time_window: Number(f.time_window.value), dry_run: f.dry_run.checked },
  }),
  immutable: f => ({
    action: "immutable", template: "immutable_template",
    tag_selectors: [{ kind: "doublestar", decoration: "matches", pattern: f.tag.value }],
    scope_selectors: { repository: [{ kind: "doublestar", decoration: "repoMatches", pattern: f.repo.value }] },
  }),
  retention: f => {
    const params = f.template.value === "always" ? {} : { [f.template.value]: Number(f.n.value) };
    return {
      algorithm: "or",
      rules: [{ action: "retain", template: f.template.value, params,
        tag_selectors: [{ kind: "doublestar", decoration: "matches", pattern: f.tag.value, extras: JSON.stringify({ untagged: f.untagged.checked }) }],
        scope_selectors: { repository: [{ kind: "doublestar", decoration: "repoMatches", pattern: f.repo.value }] } }],
      trigger: { kind: "Schedule", settings: { cron: f.cron.value } },
      scope: { level: "project", ref: Number(f.dataset.project) },
    };
  },
  warm: f => ({
    images: f.images.value.split("\n").map(s => s.trim()).filter(s => s !== ""),
    platforms: f.platforms.value.split(/[\s,]+/).filter(s => s !== ""),
  }),
  webhook: f => {
    const b = {
      name: f.name.value, enabled: true,
      event_types: [...f.querySelectorAll("input[name=event]:checked")].map(c => c.value),
      targets: [{ type: "http", address: f.address.value, auth_header: f.auth_header.value, payload_format: f.payload_format.value }],
    };
    if (f.secret.value) b.secret = f.secret.value;
    return b;
  },
  quota: f => {
    const mib = Number(f.limit.value);
    return { hard: { storage: mib < 0 ? -1 : mib * 1024 * 1024 } };
  },
  robot: f => ({
    name: f.name.value, level: "project", duration: Number(f.duration.value),
    permissions: [{ kind: "project", namespace: f.dataset.project,
      access: ["pull", "push", "delete"].filter(a => f[a].checked).map(a => ({ resource: "repository", action: a })) }],
  }),
};

// formatTime writes a time as the server does (locale.Time): to the second, in UTC.
function formatTime(d) {
  return d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

// A button with data-method calls the API, then reloads the page.
function bindAction(btn) {
  btn.addEventListener("click", async () => {
    if (btn.dataset.confirm && !confirm(btn.dataset.confirm)) return;
    const body = btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined;
    try { await call(btn.dataset.method, btn.dataset.path, body); location.reload(); }
    catch (e) { await showError(e); }
  });
}

// robotCreated shows a new robot's secret, which the API gives only in this answer, and adds the
// robot to the list without a reload (a reload would lose the secret).
function robotCreated(out) {
  document.getElementById("robot-secret-name").textContent = out.name;
  document.getElementById("robot-secret-value").textContent = out.secret;
  document.getElementById("robot-secret").hidden = false;
  const table = document.getElementById("robots");
  const row = table.insertRow(-1);
  const actions = (out.permissions || []).flatMap(p => (p.access || []).map(a => a.action));
  row.insertCell().textContent = out.name;
  row.insertCell().textContent = actions.join(" ");
  row.insertCell().textContent = out.expires_at < 0 ? table.dataset.never : formatTime(new Date(out.expires_at * 1000));
  const del = document.createElement("button");
  del.className = "delete";
  del.textContent = table.dataset.delete;
  Object.assign(del.dataset, { method: "DELETE", path: "/api/v2.0/robots/" + out.id, confirm: table.dataset.confirm });
  bindAction(del);
  row.insertCell().appendChild(del);
}

// copyText puts text on the clipboard; without the Clipboard API (a page over plain HTTP on
// another host than localhost) it selects the text for the user to copy.
async function copyText(el) {
  try {
    await navigator.clipboard.writeText(el.textContent);
    return true;
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    return document.execCommand && document.execCommand("copy");
  }
}

// resetToken takes a mailed reset link's token from the page's fragment (#token=…), which no
// request carries, and drops it from the address bar and the history.
function resetToken() {
  const form = document.getElementById("resetpw-form");
  if (!form) return;
  const m = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(location.hash);
  // Kept for this tab only, so that switching the page's language (a new load) keeps it.
  if (m) sessionStorage.setItem("resetToken", m[1]);
  form.token.value = (m && m[1]) || sessionStorage.getItem("resetToken") || "";
  history.replaceState(null, "", location.pathname);
}

document.addEventListener("DOMContentLoaded", () => {
  resetToken();
  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const [method, path] = form.dataset.api.split(" ");
      try {
        const out = await call(method, path, shapes[form.dataset.shape](form));
        if (out && out.secret) { robotCreated(out); form.reset(); return; }
        if (form.dataset.done) { say("notice", form.dataset.done); form.reset(); return; }
        location.reload();
      } catch (e) { await showError(e); }
    });
  }
  for (const btn of document.querySelectorAll("button[data-method]")) bindAction(btn);
  for (const btn of document.querySelectorAll("button.copy")) {
    btn.addEventListener("click", async () => {
      const prev = btn.previousElementSibling; // the command just before the button
      const el = btn.dataset.copy ? document.getElementById(btn.dataset.copy)
        : prev && prev.matches("code.pull") ? prev : btn.parentElement.querySelector("code.pull");
      if (await copyText(el) && btn.dataset.copied) btn.textContent = btn.dataset.copied;
    });
  }
});

// cove's admin page: every change goes to the same /api/v2.0 endpoints that tools use.
// Text from the server is only ever set with textContent, never as HTML.
"use strict";

function showError(msg) {
  const el = document.getElementById("error");
  el.textContent = msg;
  el.hidden = false;
}

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
    const m = data && data.errors && data.errors[0] ? data.errors[0].message : resp.status + " " + resp.statusText;
    throw new Error(m);
  }
  return data;
}

// Shapes turn a form into the JSON body its endpoint takes.
const shapes = {
  project: f => ({ project_name: f.project_name.value, metadata: { public: f.public.checked ? "true" : "false" } }),
  member: f => {
    const b = { role_id: Number(f.role_id.value) };
    if (f.kind.value === "g") b.member_group = { group_name: f.name.value };
    else b.member_user = { username: f.name.value };
    return b;
  },
  user: f => ({ username: f.username.value, email: f.email.value, password: f.password.value }),
  settings: f => ({
    self_registration: f.self_registration.checked,
    anonymous_pull: f.anonymous_pull.value,
    project_creation_restriction: f.project_creation_restriction.value,
  }),
  robot: f => ({
    name: f.name.value, level: "project", duration: Number(f.duration.value),
    permissions: [{ kind: "project", namespace: f.dataset.project,
      access: ["pull", "push", "delete"].filter(a => f[a].checked).map(a => ({ resource: "repository", action: a })) }],
  }),
};

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const [method, path] = form.dataset.api.split(" ");
      try {
        const out = await call(method, path, shapes[form.dataset.shape](form));
        if (out && out.secret) { // a robot's secret is shown once
          const el = document.getElementById("robot-secret");
          el.textContent = out.name + " : " + out.secret;
          el.hidden = false;
          return;
        }
        location.reload();
      } catch (e) { showError(e.message); }
    });
  }
  for (const btn of document.querySelectorAll("button[data-method]")) {
    btn.addEventListener("click", async () => {
      if (btn.dataset.confirm && !confirm(btn.dataset.confirm)) return;
      const body = btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined;
      try { await call(btn.dataset.method, btn.dataset.path, body); location.reload(); }
      catch (e) { showError(e.message); }
    });
  }
  for (const btn of document.querySelectorAll("button.copy")) {
    btn.addEventListener("click", () => {
      const text = btn.parentElement.querySelector("code.pull").textContent;
      if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    });
  }
});

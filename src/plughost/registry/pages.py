"""The registry server's one page (``/dashboard``, ``/device``): sign in, approve a command
line's sign-in, see a publisher's submissions, and (reviewers) approve or reject them.

Self-contained (no build step, nothing fetched from elsewhere): it calls the
JSON API with the token kept in this tab's sessionStorage, and writes every
server-given text with ``textContent``, never as HTML.
"""

from __future__ import annotations

__all__ = ["DASHBOARD_HTML"]

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plughost registry</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}
section{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:0}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #eee;padding:.3em;
text-align:left;vertical-align:top} .status{font-weight:bold} .error{color:#b00}
input,button{font:inherit;margin:.2em}
</style></head><body>
<h1>plughost registry</h1>
<p id="message" role="status"></p>
<section id="signin"><h2>Sign in</h2>
<form id="login-form">
<input id="email" type="email" placeholder="email" autocomplete="username" required>
<input id="password" type="password" placeholder="password" autocomplete="current-password"
 required>
<button type="submit">Sign in</button></form></section>
<section id="account" hidden><h2>Signed in as <span id="who"></span></h2>
<button id="logout">Sign out</button></section>
<section id="device" hidden><h2>Approve a command-line sign-in</h2>
<form id="device-form"><input id="user-code" placeholder="ABCD-EFGH" required>
<button type="submit" id="device-approve">Approve</button>
<button type="button" id="device-deny">Deny</button></form></section>
<section id="publisher" hidden><h2>A publisher's submissions</h2>
<form id="publisher-form"><input id="slug" placeholder="publisher slug" required>
<button type="submit">Show</button></form>
<table id="submissions"><thead><tr><th>plugin</th><th>version</th><th>status</th>
<th>validation</th><th>notes</th><th>updated</th></tr></thead><tbody></tbody></table></section>
<section id="queue" hidden><h2>Waiting for review</h2>
<table id="pending"><thead><tr><th>plugin</th><th>version</th><th>validation</th><th>notes</th>
<th></th></tr></thead><tbody></tbody></table></section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let me = null;
function say(text, bad) {
  $("message").textContent = text;
  $("message").className = bad ? "error" : "";
}
async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem("registry-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {method, headers,
    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await answer.json();
  if (!answer.ok || !data.success) throw new Error(data.message || answer.statusText);
  return data.data;
}
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}
function validation(sub) {
  if (!sub.validation_result) return "";
  try {
    return Object.entries(JSON.parse(sub.validation_result))
      .map(([arch, r]) => arch + ": " + (r.ok ? "ok" : r.error)).join("; ");
  } catch (e) { return sub.validation_result; }
}
async function showPublisher(slug) {
  const subs = await api("GET", "/v1/publishers/" + encodeURIComponent(slug) + "/submissions");
  const body = $("submissions").tBodies[0];
  body.replaceChildren();
  for (const sub of subs) {
    const row = body.insertRow();
    row.dataset.id = sub.id;
    cell(row, sub.plugin_id); cell(row, sub.version);
    cell(row, sub.status).className = "status";
    cell(row, validation(sub)); cell(row, sub.reviewer_notes); cell(row, sub.updated_at);
  }
  if (!subs.length) say("no submissions for " + slug);
}
async function showQueue() {
  const subs = await api("GET", "/v1/submissions?status=pending_review");
  const body = $("pending").tBodies[0];
  body.replaceChildren();
  for (const sub of subs) {
    const row = body.insertRow();
    row.dataset.id = sub.id;
    cell(row, sub.plugin_id); cell(row, sub.version); cell(row, validation(sub));
    const notes = document.createElement("input");
    notes.placeholder = "notes"; notes.className = "notes";
    cell(row, "").appendChild(notes);
    const actions = cell(row, "");
    for (const [label, verb] of [["Approve", "approve"], ["Reject", "reject"]]) {
      const button = document.createElement("button");
      button.textContent = label; button.className = verb;
      button.onclick = async () => {
        try {
          const done = await api("POST", "/v1/submissions/" + sub.id + "/" + verb,
                                 {notes: notes.value});
          say(sub.plugin_id + " " + sub.version + ": " + done.status);
          await showQueue();
          if ($("slug").value) await showPublisher($("slug").value);
        } catch (e) { say(e.message, true); }
      };
      actions.appendChild(button);
    }
  }
}
async function refresh() {
  try { me = sessionStorage.getItem("registry-token") ? await api("GET", "/v1/auth/me") : null; }
  catch (e) { sessionStorage.removeItem("registry-token"); me = null; }
  $("signin").hidden = !!me;
  for (const id of ["account", "device", "publisher"]) $(id).hidden = !me;
  $("queue").hidden = !(me && (me.role === "reviewer" || me.role === "admin"));
  if (me) $("who").textContent = me.email + " (" + me.role + ")";
  if (me && !$("queue").hidden) await showQueue();
}
$("login-form").onsubmit = async (event) => {
  event.preventDefault();
  try {
    const answer = await api("POST", "/v1/auth/login",
                             {email: $("email").value, password: $("password").value});
    sessionStorage.setItem("registry-token", answer.token);
    say("signed in");
    await refresh();
  } catch (e) { say(e.message, true); }
};
$("logout").onclick = async () => {
  try { await api("POST", "/v1/auth/logout"); } catch (e) { /* gone already */ }
  sessionStorage.removeItem("registry-token");
  say("signed out");
  await refresh();
};
async function decide(approve) {
  try {
    await api("POST", "/v1/auth/device/approve", {user_code: $("user-code").value, approve});
    say(approve ? "the command line is signed in" : "the sign-in was denied");
  } catch (e) { say(e.message, true); }
}
$("device-form").onsubmit = (event) => { event.preventDefault(); decide(true); };
$("device-deny").onclick = () => decide(false);
$("publisher-form").onsubmit = async (event) => {
  event.preventDefault();
  try { await showPublisher($("slug").value); } catch (e) { say(e.message, true); }
};
const code = new URLSearchParams(location.search).get("code");
if (code) $("user-code").value = code;
refresh();
</script></body></html>
"""

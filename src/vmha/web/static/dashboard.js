// vmha dashboard: live updates and actions. Everything shown is rendered by
// the server; this module only (1) keeps the API token of this tab in
// sessionStorage at login (never in a URL, never in a cookie), (2) follows
// the API's SSE stream with that token and re-fetches the page's #live
// region when something happens (and every few seconds, for heartbeat
// ages), (3) sends operator actions to the /v1 API with that token, after
// a confirmation. Without JavaScript the pages still show everything.

const TOKEN_KEY = "vmha.token";
const PERIOD_MS = 5000;
const statusLine = () => document.querySelector("[data-live-status]");
const token = () => sessionStorage.getItem(TOKEN_KEY);

function say(text) {
  const el = statusLine();
  if (el) el.textContent = text;
}

// -- login / logout -----------------------------------------------------------
document.addEventListener("submit", (ev) => {
  const form = ev.target;
  if (form.matches("[data-login]")) {
    const value = form.querySelector("input[name=token]").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
  } else if (form.matches(".logout")) {
    sessionStorage.removeItem(TOKEN_KEY);
  }
});

// -- live region --------------------------------------------------------------
let refreshTimer = null;
let refreshing = false;

async function refresh() {
  const live = document.querySelector("[data-live]");
  if (!live || refreshing) return;
  refreshing = true;
  try {
    const resp = await fetch(location.href, { credentials: "same-origin",
                                              headers: { "Accept": "text/html" } });
    if (resp.redirected && new URL(resp.url).pathname === "/ui/login") {
      say("Your session ended: log in again.");
      return;
    }
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    const fresh = doc.querySelector("[data-live]");
    if (fresh && fresh.innerHTML !== live.innerHTML) live.innerHTML = fresh.innerHTML;
  } catch (err) {
    // the controller may be restarting: the next round tries again
  } finally {
    refreshing = false;
  }
}

function soon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 250);
}

// Server-Sent Events over fetch, so that the token goes in a header.
async function follow() {
  let lastId = null;
  let delay = 1000;
  for (;;) {
    const tok = token();
    if (!tok) {
      say("Live updates need the token of this tab: log in again to turn them on.");
      return;
    }
    try {
      const headers = { "Authorization": `Bearer ${tok}`, "Accept": "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const resp = await fetch("/v1/events/stream", { headers, cache: "no-store" });
      if (resp.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        say("The API refused this tab's token: log in again.");
        return;
      }
      if (!resp.ok || !resp.body) throw new Error(`stream answered ${resp.status}`);
      say("Live.");
      delay = 1000;
      lastId = await readFrames(resp.body, lastId);
    } catch (err) {
      say("Live updates interrupted; reconnecting…");
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

async function readFrames(body, lastId) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return lastId;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const fields = {};
      for (const line of frame.split("\n")) {
        const i = line.indexOf(":");
        if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1).trim();
      }
      if (fields.id) {
        lastId = fields.id;
        announce(fields);
        patchHost(fields);
        soon();
      }
    }
  }
}

// A host's state change is shown at once (the page refresh that follows
// brings everything else): fast transitions such as failed -> fencing ->
// fenced, a fraction of a second apart, are each visible.
function patchHost(fields) {
  let event;
  try { event = JSON.parse(fields.data); } catch (err) { return; }
  const data = event.data || {};
  if (data.subject_kind !== "host" || !data.to) return;
  const card = document.querySelector(`[data-host="${CSS.escape(event.subject)}"]`);
  if (!card) return;
  card.dataset.state = data.to;
  card.className = card.className.replace(/\bhost-[a-z]+/, `host-${data.to}`);
  const badge = card.querySelector("h3 .state");
  if (badge) {
    badge.textContent = data.to;
    badge.className = `state state-${data.to}`;
  }
}

function announce(fields) {
  try {
    const data = JSON.parse(fields.data).data || {};
    say(`${fields.event} ${JSON.parse(fields.data).subject}${data.reason ? ": " + data.reason : ""}`);
  } catch (err) {
    say(fields.event || "update");
  }
}

// -- actions ------------------------------------------------------------------
async function callApi(method, path, body) {
  const tok = token();
  if (!tok) {
    say("Actions need this tab's token: log in again.");
    return null;
  }
  const resp = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${tok}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = null;
  try { answer = await resp.json(); } catch (err) { answer = null; }
  if (!resp.ok) {
    say(`Refused (${resp.status}): ${answer && answer.detail ? answer.detail : resp.statusText}`);
    return null;
  }
  return answer || {};
}

document.addEventListener("click", async (ev) => {
  const el = ev.target.closest("button");
  if (!el) return;
  let done = null;
  if (el.dataset.resume) {
    const seg = el.dataset.resume;
    if (!confirm(`Resume automatic fencing and recovery in segment ${seg}?`)) return;
    done = await callApi("POST", `/v1/segments/${encodeURIComponent(seg)}/resume`, {});
    if (done) say(`Recovery resumed in segment ${seg}.`);
  } else if (el.dataset.fenceAck) {
    const host = el.dataset.fenceAck;
    if (!confirm(`Confirm that ${host} is powered off? Its instances will be started elsewhere; ` +
                 "if it is still running they would run twice.")) return;
    done = await callApi("POST", `/v1/hosts/${encodeURIComponent(host)}/fence-ack`, {});
    if (done) say(`Fence of ${host} acknowledged.`);
  } else if (el.dataset.action) {
    const box = el.closest("[data-actions]");
    const name = el.dataset.instanceName;
    if (!box || !confirm(`${el.dataset.action} instance ${name}?`)) return;
    done = await callApi("POST", `/v1/instances/${encodeURIComponent(box.dataset.actions)}/actions`,
                         { action: el.dataset.action });
    if (done) say(`${el.dataset.action} of ${name}: job ${done.id} ${done.state}.`);
  }
  if (done) soon();
});

if (document.querySelector("[data-live]") && !document.querySelector("[data-login]")) {
  follow();
  setInterval(refresh, PERIOD_MS);
}

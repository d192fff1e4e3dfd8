// The live page (docs/live-page.md). Who is online: the list of /api/v1/clients, then kept
// current by the event stream /api/v1/events (read with fetch, so that a bearer token can be
// sent); the recent events with a kind filter; the counters of /api/v1/stats; the msgack lookup
// of /api/v1/acks. Data is only ever written with textContent, never parsed as HTML.
"use strict";
(() => {
  const MAX_EVENT_ROWS = 500; // older rows are removed from the table
  const CLIENT_PAGE = 500; // clients per /api/v1/clients request
  const MAX_CLIENT_PAGES = 20; // at most 10,000 clients listed
  const STATS_EVERY_MS = 2000;
  const KINDS = ["connected", "disconnected", "subscribed", "unsubscribed", "message", "msgack",
    "refused", "denied", "dropped"];
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem("activity-token") || "";
  let tokenWaiters = [];
  const headers = () => (token ? { Authorization: "Bearer " + token } : {});
  const delay = (ms) => new Promise((done) => setTimeout(done, ms));
  const time = (ms) => (typeof ms === "number" ? new Date(ms).toISOString().slice(11, 23) : "");

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function askToken() {
    $("token-form").hidden = false;
    return new Promise((done) => tokenWaiters.push(done));
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("activity-token", token);
    $("token-form").hidden = true;
    tokenWaiters.forEach((done) => done());
    tokenWaiters = [];
  });

  async function api(path) {
    for (;;) {
      const r = await fetch(path, { headers: headers(), cache: "no-store" });
      if (r.status === 401) {
        await askToken();
        continue;
      }
      const body = await r.json().catch(() => null);
      return { status: r.status, body };
    }
  }

  function setStream(state, text) {
    const badge = $("stream");
    badge.dataset.state = state;
    badge.textContent = text || state;
  }

  // ---- who is online -------------------------------------------------------------------------

  const online = new Map(); // client_id -> the API's client object
  let listTruncated = false;
  let snapshotReady = false;
  let pendingPresence = []; // events that arrived while the list was loading

  // Whether `a` (a client or an event) is of the same connection as `b` or a later one:
  // session_seq when both carry it, else the connection's start time.
  function sameOrLater(a, b) {
    if (a.session_seq != null && b.session_seq != null) return a.session_seq >= b.session_seq;
    return (a.connected_at || 0) >= (b.connected_at || 0);
  }

  function applyPresence(kind, ev) {
    const id = ev.client_id;
    const cur = online.get(id);
    if (kind === "connected") {
      const entry = {
        client_id: id, username: ev.username ?? null, peer: ev.peer ?? null,
        proto_ver: ev.proto_ver, connected_at: ev.ts, session_seq: ev.session_seq ?? null,
        subscriptions: 0, last_activity: ev.ts,
      };
      if (cur && !sameOrLater(entry, cur)) return;
      if (cur && cur.session_seq === entry.session_seq && cur.connected_at === entry.connected_at) {
        entry.subscriptions = cur.subscriptions; // the list already had this connection
      }
      online.set(id, entry);
    } else if (kind === "disconnected") {
      if (cur && sameOrLater(ev, cur)) online.delete(id);
    } else if (cur) {
      // subscribed / unsubscribed: the count comes from the API, which knows duplicates.
      refreshClient(id);
    }
    scheduleRender();
  }

  const refreshing = new Map();
  function refreshClient(id) {
    if (refreshing.has(id)) return;
    refreshing.set(id, setTimeout(async () => {
      refreshing.delete(id);
      const { status, body } = await api("api/v1/clients/" + encodeURIComponent(id)).catch(() => ({}));
      const cur = online.get(id);
      if (status === 200 && body && cur && sameOrLater(body, cur) && sameOrLater(cur, body)) {
        cur.subscriptions = body.subscriptions;
        scheduleRender();
      }
    }, 200));
  }

  function touch(ev) {
    const id = ev.client_id ?? ev.ack_client_id ?? ev.pub_client_id;
    const cur = id != null && online.get(id);
    if (cur && typeof ev.ts === "number" && ev.ts > (cur.last_activity || 0)) {
      cur.last_activity = ev.ts;
      scheduleRender();
    }
  }

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderOnline();
    });
  }

  function renderOnline() {
    const body = $("online");
    const rows = [...online.values()].sort((a, b) => (a.client_id < b.client_id ? -1 : 1));
    const fresh = document.createDocumentFragment();
    for (const c of rows) {
      const tr = el("tr");
      tr.dataset.client = c.client_id;
      for (const v of [c.client_id, c.username ?? "", c.peer ?? "", c.proto_ver,
        time(c.connected_at), c.session_seq ?? "", c.subscriptions ?? "", time(c.last_activity)]) {
        tr.append(el("td", v));
      }
      fresh.append(tr);
    }
    body.replaceChildren(fresh);
    $("online-count").textContent = rows.length + (listTruncated ? "+" : "");
    const more = $("online-more");
    more.hidden = !listTruncated;
    more.textContent = "More clients are online than this page lists (" +
      CLIENT_PAGE * MAX_CLIENT_PAGES + " at most): see /api/v1/clients.";
  }

  // Reads the list again: at the start, after a reconnect, and when the stream says it skipped
  // events. Presence events wait meanwhile; a newer resync supersedes an older one.
  let generation = 0;
  const MAX_PENDING = 100000;
  async function resync() {
    const gen = ++generation;
    snapshotReady = false;
    pendingPresence = [];
    for (;;) {
      try {
        await loadClients(gen);
        if (gen === generation && listError) note("");
        return;
      } catch (e) {
        if (gen !== generation) return;
        note("cannot read the client list (" + e.message + "): retrying", true);
        await delay(2000);
        if (gen !== generation) return;
      }
    }
  }

  let listError = false;
  function note(text, isListError = false) {
    listError = isListError;
    $("note").textContent = text;
  }

  async function loadClients(gen) {
    const listed = new Map();
    let after = null;
    let pages = 0;
    for (;;) {
      let path = "api/v1/clients?limit=" + CLIENT_PAGE;
      if (after !== null) path += "&after=" + encodeURIComponent(after);
      const { status, body } = await api(path);
      if (gen !== generation) return;
      if (status !== 200 || !body || !Array.isArray(body.clients)) {
        throw new Error("clients: " + status);
      }
      for (const c of body.clients) listed.set(c.client_id, c);
      after = body.next ?? null;
      pages += 1;
      if (after === null || pages >= MAX_CLIENT_PAGES) break;
    }
    listTruncated = after !== null;
    online.clear();
    for (const [id, c] of listed) online.set(id, c);
    const pending = pendingPresence;
    pendingPresence = [];
    snapshotReady = true;
    for (const [kind, ev] of pending) applyPresence(kind, ev);
    renderOnline();
  }

  // ---- the event stream ----------------------------------------------------------------------

  const enabled = new Map(); // kind -> shown
  let eventRows = 0;

  function kindBox(kind) {
    if (enabled.has(kind)) return;
    enabled.set(kind, true);
    const label = el("label");
    const box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.id = "kind-" + kind;
    box.dataset.kind = kind;
    box.addEventListener("change", () => {
      enabled.set(kind, box.checked);
      for (const tr of $("events").children) {
        if (tr.dataset.kind === kind) tr.hidden = !box.checked;
      }
    });
    label.append(box, el("span", kind, "kind kind-" + kind));
    $("kinds").append(label);
  }
  KINDS.forEach(kindBox);

  function details(ev) {
    const skip = new Set(["client_id", "ts", "event_seq"]);
    const parts = [];
    for (const [k, v] of Object.entries(ev)) {
      if (skip.has(k)) continue;
      parts.push(k + "=" + (typeof v === "string" ? v : JSON.stringify(v)));
    }
    const text = parts.join(" ");
    return text.length > 300 ? text.slice(0, 300) + "…" : text;
  }

  // Rows are added once per frame: a busy broker's stream costs one repaint per frame, and
  // only the newest MAX_EVENT_ROWS of a burst are built.
  let rowQueue = [];
  function showEvent(id, kind, ev) {
    kindBox(kind);
    rowQueue.push([id, kind, ev]);
    if (rowQueue.length > MAX_EVENT_ROWS) rowQueue = rowQueue.slice(-MAX_EVENT_ROWS);
    if (rowQueue.length === 1) requestAnimationFrame(flushRows);
  }

  function flushRows() {
    const fresh = document.createDocumentFragment();
    for (const [id, kind, ev] of rowQueue.reverse()) fresh.append(eventRow(id, kind, ev));
    const added = rowQueue.length;
    rowQueue = [];
    const body = $("events");
    body.prepend(fresh);
    eventRows += added;
    while (eventRows > MAX_EVENT_ROWS) {
      body.lastElementChild.remove();
      eventRows -= 1;
    }
    $("events-count").textContent = eventRows;
  }

  function eventRow(id, kind, ev) {
    const tr = el("tr", null, "new");
    tr.dataset.kind = kind;
    tr.dataset.seq = id ?? "";
    const subject = ev.client_id ?? ev.ack_client_id ?? ev.pub_client_id ?? "";
    tr.dataset.client = subject;
    const kindCell = el("td");
    kindCell.append(el("span", kind, "kind kind-" + kind));
    tr.append(el("td", id ?? ""), el("td", time(ev.ts)), kindCell, el("td", subject),
      el("td", details(ev), "details"));
    tr.hidden = !enabled.get(kind);
    return tr;
  }

  function handleEvent(id, kind, data) {
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    showEvent(id, kind, ev);
    if (["connected", "disconnected", "subscribed", "unsubscribed"].includes(kind)) {
      if (snapshotReady) applyPresence(kind, ev);
      else if (pendingPresence.push([kind, ev]) > MAX_PENDING) resync();
    }
    touch(ev);
  }

  // Server-Sent Events (the HTML standard's format) read from a fetch body: `id:`, `event:`,
  // `data:` lines, a blank line ends an event, `:` starts a comment.
  async function readStream(response, onEvent, onComment) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let id = null;
    let kind = "message";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let m;
      while ((m = /\r\n|\r|\n/.exec(buf))) {
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === "") {
          if (data.length) onEvent(id, kind, data.join("\n"));
          kind = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) {
          const text = line.slice(1).trim();
          if (text) onComment(text); // empty ones keep the connection alive
          continue;
        }
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "id") id = value;
        else if (field === "event") kind = value;
        else if (field === "data") data.push(value);
      }
    }
  }

  async function stream() {
    let lastId = null;
    let backoff = 500;
    for (;;) {
      setStream("connecting");
      try {
        const h = headers();
        if (lastId !== null) h["Last-Event-ID"] = lastId;
        const r = await fetch("api/v1/events", { headers: h, cache: "no-store" });
        if (r.status === 401) {
          setStream("error", "token needed");
          await askToken();
          continue;
        }
        if (!r.ok || !r.body) throw new Error("events: " + r.status);
        setStream("live");
        backoff = 500;
        // The list is read once the stream is open, so no change falls between the two; a
        // reconnect reads it again (the stream may have missed events meanwhile).
        resync();
        await readStream(r, (id, kind, data) => {
          if (id !== null) lastId = id;
          handleEvent(id, kind, data);
        }, (text) => {
          // The server says events were skipped or are no longer held: the list may be stale.
          note(time(Date.now()) + " UTC: " + text);
          if (snapshotReady) resync();
        });
        setStream("connecting", "reconnecting");
      } catch (e) {
        setStream("error", e.message);
      }
      await delay(backoff);
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  // ---- counters ------------------------------------------------------------------------------

  let lastStats = null;
  function renderStats() {
    if (!lastStats) return;
    const showZero = $("stats-zero").checked;
    const out = document.createDocumentFragment();
    for (const family of lastStats.families || []) {
      for (const s of family.samples || []) {
        if (!showZero && s.value === 0) continue;
        const labels = Object.entries(s.labels || {}).map(([k, v]) => k + "=" + v).join(",");
        const name = family.name.replace(/^activity_/, "") + (labels ? "{" + labels + "}" : "");
        const dt = el("dt", name);
        dt.title = family.help || "";
        const dd = el("dd", Number.isInteger(s.value) ? s.value.toLocaleString("en") : s.value);
        dd.dataset.metric = name;
        out.append(dt, dd);
      }
    }
    $("stats").replaceChildren(out);
  }
  $("stats-zero").addEventListener("change", renderStats);

  async function pollStats() {
    for (;;) {
      try {
        const { status, body } = await api("api/v1/stats");
        if (status === 200) {
          lastStats = body;
          renderStats();
        }
      } catch {
        // the stream's badge shows the server's state
      }
      await delay(STATS_EVERY_MS);
    }
  }

  // ---- the msgack lookup ---------------------------------------------------------------------

  $("ack-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const product = $("ack-product").value.trim();
    const message = $("ack-message").value.trim();
    const client = $("ack-client").value.trim();
    const q = new URLSearchParams({ product_id: product, message_id: message });
    if (client) q.set("client_id", client);
    const result = $("ack-result");
    result.dataset.state = "pending";
    result.textContent = "looking up…";
    const { status, body } = await api("api/v1/acks?" + q).catch((err) => ({ body: { error: err.message } }));
    result.replaceChildren();
    if (status !== 200 || !body) {
      result.dataset.state = "error";
      result.textContent = "error: " + ((body && body.error) || status);
      return;
    }
    const who = client ? "client " + client : "any client";
    const what = "(" + product + ", " + message + ")";
    if (body.acked) {
      result.dataset.state = "yes";
      result.append(el("strong", "Yes"), " " + who + " acknowledged " + what + ":");
      const ul = el("ul");
      for (const a of body.acks) {
        ul.append(el("li", a.ack_client_id + " at " + time(a.ts) + " UTC, topic " + a.topic +
          ", QoS " + a.qos + ", published by " + (a.pub_client_id ?? "(unknown)")));
      }
      result.append(ul);
    } else {
      result.dataset.state = "no";
      let text = " no msgack of " + what + " by " + who + " among the " + body.held +
        " most recent acknowledgements";
      if (body.evicted > 0) {
        text += " (since " + time(body.oldest_ts) + " UTC; " + body.evicted +
          " older ones were evicted, the table holds " + body.capacity + ")";
      }
      result.append(el("strong", "No"), text + ".");
    }
  });

  stream();
  pollStats();
})();

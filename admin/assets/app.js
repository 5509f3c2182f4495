/*
 * smtpvault admin page. Talks to /api/v1 only. Everything the server sends
 * is put on the page with textContent (the el() helper below); nothing is
 * ever parsed as HTML, so text from SMTP clients (HELO, subjects, senders)
 * shows literally. State-changing requests carry the session's CSRF token.
 */
"use strict";

(function () {
  const API = "/api/v1";
  const AGE_WARN_DAYS = 90;
  const AUDIT_PAGE = 50;
  const STATUS_TEXT = {
    ok: "ok", failing_credential: "failing credential", on_hold: "on hold", over_quota: "over quota"
  };
  let csrf = "";
  let auditCursors = [];   // cursors of the pages before the current one
  let auditCursor = "";
  let auditNext = null;

  const $ = (id) => document.getElementById(id);

  /* Build an element; strings become text nodes, never markup. */
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  async function api(method, path, body) {
    const opts = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, opts);
    } catch (e) {
      return { status: 0, data: { error: "the server cannot be reached" } };
    }
    let data = {};
    try { data = await res.json(); } catch (e) { data = {}; }
    if (res.status === 401 && path !== "/login") showLogin("Your session has ended; sign in again.");
    return { status: res.status, data };
  }

  function flash(text, bad) {
    const f = $("flash");
    f.textContent = text;
    f.classList.toggle("bad", !!bad);
    f.hidden = !text;
  }

  function confirmBox(text) {
    return new Promise((resolve) => {
      const m = $("confirm");
      $("confirm-text").textContent = text;
      m.hidden = false;
      const done = (v) => { m.hidden = true; $("confirm-yes").onclick = $("confirm-no").onclick = null; resolve(v); };
      $("confirm-yes").onclick = () => done(true);
      $("confirm-no").onclick = () => done(false);
      $("confirm-yes").focus();
    });
  }

  function fmtTime(ts) {
    if (!ts) return "—";
    return ts.replace("T", " ").replace(/\.\d+Z$|Z$/, "");
  }

  function fmtSize(bytes) {
    if (bytes === null || bytes === undefined) return "?";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
    return (bytes / 1048576).toFixed(1) + " MiB";
  }

  function fmtAge(seconds) {
    const d = Math.floor(seconds / 86400);
    if (d >= 1) return d + (d === 1 ? " day" : " days");
    const h = Math.floor(seconds / 3600);
    if (h >= 1) return h + (h === 1 ? " hour" : " hours");
    return Math.max(1, Math.floor(seconds / 60)) + " min";
  }

  /* ---- Views ------------------------------------------------------------ */

  const views = ["login", "dashboard", "accounts", "audit", "queue"];

  function show(name) {
    for (const v of views) $("view-" + v).hidden = v !== name;
    for (const v of views.slice(1)) $("nav-" + v).classList.toggle("active", v === name);
  }

  function showLogin(message) {
    csrf = "";
    $("nav").hidden = true;
    $("logout").hidden = true;
    $("who").textContent = "";
    $("login-error").textContent = message || "";
    flash("");
    show("login");
    $("login-user").focus();
  }

  function route() {
    if (!csrf) return;
    const name = (location.hash || "#dashboard").slice(1);
    const view = views.includes(name) && name !== "login" ? name : "dashboard";
    flash("");
    show(view);
    if (view === "dashboard") loadDashboard();
    else if (view === "accounts") loadAccounts();
    else if (view === "audit") { auditCursors = []; auditCursor = ""; loadAudit(); }
    else if (view === "queue") loadQueue();
  }

  function signedIn(user, token) {
    csrf = token;
    $("nav").hidden = false;
    $("logout").hidden = false;
    $("who").textContent = user;
    route();
  }

  /* ---- Login ------------------------------------------------------------- */

  async function login(ev) {
    ev.preventDefault();
    const pw = $("login-password");
    const r = await api("POST", "/login", { username: $("login-user").value, password: pw.value });
    pw.value = "";
    if (r.status === 200) {
      if (location.hash === "" || location.hash === "#login") location.hash = "#dashboard";
      signedIn(r.data.user, r.data.csrf_token);
    } else {
      $("login-error").textContent = r.data.error || ("sign-in failed (" + r.status + ")");
    }
  }

  async function logout() {
    await api("POST", "/logout");
    showLogin("Signed out.");
  }

  /* ---- Dashboard --------------------------------------------------------- */

  function quotaBar(label, used, limit) {
    const known = used !== null && used !== undefined;
    const pct = known && limit > 0 ? Math.min(100, (100 * used) / limit) : 0;
    const fill = el("span");
    fill.style.width = pct.toFixed(1) + "%";   /* CSSOM, allowed by the CSP */
    const bar = el("div", { class: "bar" + (pct >= 100 ? " full" : pct >= 80 ? " high" : ""),
      role: "img", "aria-label": label + " " + (known ? used : "?") + " of " + limit }, fill);
    return el("div", { class: "quota" },
      el("div", { class: "row" }, el("span", { text: label }),
        el("span", { class: "note", text: (known ? used : "?") + " / " + limit })), bar);
  }

  function accountCard(a) {
    const age = el("dd", {}, "v" + a.version + ", " + fmtAge(a.credential_age_seconds) + " old");
    if (a.credential_age_warning)
      age.append(" ", el("span", { class: "warn", text: "rotate soon (over " + AGE_WARN_DAYS + " days)" }));
    const err = a.last_error
      ? el("dd", {}, fmtTime(a.last_error.ts) + " (" + a.last_error.status + ")",
        el("pre", { class: "reply", text: a.last_error.upstream_reply || "(no reply text)" }))
      : el("dd", { text: "none" });
    const hold = a.hold
      ? [el("dt", { text: "On hold" }), el("dd", { class: "hold" }, a.hold.messages + " message" +
          (a.hold.messages === 1 ? "" : "s") + " waiting",
        el("pre", { class: "reply", text: a.hold.reason || "(no reason given)" }))]
      : [];
    return el("article", { class: "card acct", "data-account": a.address },
      el("h2", {}, el("span", { text: a.address }),
        el("span", { class: "badge " + a.status, text: STATUS_TEXT[a.status] || a.status })),
      a.aliases.length ? el("div", { class: "note", text: "aliases: " + a.aliases.join(", ") }) : null,
      quotaBar("Messages, 24 h", a.messages_24h, a.daily_limit),
      quotaBar("Recipients, 24 h", a.recipients_24h, a.daily_recipient_limit),
      el("dl", {},
        el("dt", { text: "Credential" }), age,
        el("dt", { text: "Upstream" }), el("dd", { text: a.upstream + " (" + a.tls + "), " +
          a.upstream_sessions + " open session" + (a.upstream_sessions === 1 ? "" : "s") }),
        el("dt", { text: "Last delivery" }), el("dd", { text: fmtTime(a.last_delivery) }),
        el("dt", { text: "Queued" }), el("dd", { text: String(a.queued || 0) }),
        hold,
        el("dt", { text: "Last error" }), err));
  }

  function tile(n, label) {
    return el("div", { class: "tile" }, el("div", { class: "n", text: String(n) }),
      el("div", { class: "l", text: label }));
  }

  async function loadDashboard() {
    const r = await api("GET", "/accounts");
    if (r.status !== 200) { flash(r.data.error || "cannot load the accounts", true); return; }
    const accts = r.data.accounts;
    const tiles = $("dash-tiles");
    clear(tiles);
    const sent = accts.reduce((s, a) => s + (a.messages_24h || 0), 0);
    tiles.append(tile(accts.length, "accounts"),
      tile(accts.filter((a) => a.status !== "ok").length, "need attention"),
      tile(sent, "delivered in 24 h"),
      tile(r.data.queue.depth, "queued (" + r.data.queue.mode + " mode)"));
    const box = $("dash-accounts");
    clear(box);
    if (!accts.length) box.append(el("p", { class: "note", text: "No accounts yet: add one under Accounts." }));
    for (const a of accts) box.append(accountCard(a));
    $("dash-note").textContent = "Figures: " + r.data.usage_source + "; as of " + fmtTime(r.data.now) + " UTC.";
  }

  /* ---- Accounts ---------------------------------------------------------- */

  let rotating = null;

  function openRotate(address) {
    rotating = address;
    $("rotate-address").textContent = address;
    $("rotate-password").value = "";
    clear($("rotate-result"));
    $("rotate-panel").hidden = false;
    $("rotate-password").focus();
  }

  function resultBox(box, ok, text, reply) {
    clear(box);
    box.append(el("p", { class: ok ? "ok-text" : "error", text }));
    if (reply) box.append(el("pre", { class: "reply", text: reply }));
  }

  async function rotate(ev) {
    ev.preventDefault();
    const pw = $("rotate-password");
    const btn = $("rotate-submit");
    btn.disabled = true;
    resultBox($("rotate-result"), true, $("rotate-verify").checked ? "Checking with the upstream…" : "Storing…");
    const r = await api("POST", "/accounts/" + encodeURIComponent(rotating) + "/rotate",
      { password: pw.value, verify: $("rotate-verify").checked });
    pw.value = "";
    btn.disabled = false;
    if (r.status === 200) {
      resultBox($("rotate-result"), true, "Rotated " + r.data.address + " to credential version " +
        r.data.version + (r.data.verified ? ", verified with the upstream:" : " (not verified)."),
        r.data.upstream_reply);
      loadAccounts(true);
    } else {
      resultBox($("rotate-result"), false, r.data.error || ("failed (" + r.status + ")"), r.data.upstream_reply);
    }
  }

  async function rollback(address) {
    if (!(await confirmBox("Make the previous App Password of " + address + " current again?"))) return;
    const r = await api("POST", "/accounts/" + encodeURIComponent(address) + "/rollback");
    flash(r.status === 200 ? address + " is back at credential version " + r.data.version + "."
      : (r.data.error || "rollback failed"), r.status !== 200);
    loadAccounts(true);
  }

  async function removeAccount(address) {
    if (!(await confirmBox("Remove " + address + " and all its App Passwords? Mail routed to it will be refused."))) return;
    const r = await api("DELETE", "/accounts/" + encodeURIComponent(address));
    flash(r.status === 200 ? "Removed " + address + "." : (r.data.error || "remove failed"), r.status !== 200);
    $("rotate-panel").hidden = true;
    loadAccounts(true);
  }

  async function loadAccounts(keepFlash) {
    const r = await api("GET", "/accounts");
    if (r.status !== 200) { flash(r.data.error || "cannot load the accounts", true); return; }
    const body = $("accounts-table").tBodies[0];
    clear(body);
    for (const a of r.data.accounts) {
      const prev = a.versions.some((v) => v.version < a.version);
      const cred = el("td", {}, "version " + a.version, el("br"),
        el("span", { class: "note", text: "rotated " + fmtTime(a.rotated) + " (" + fmtAge(a.credential_age_seconds) + ")" }));
      if (a.credential_age_warning) cred.append(el("br"), el("span", { class: "warn", text: "older than " + AGE_WARN_DAYS + " days" }));
      body.append(el("tr", { "data-account": a.address },
        el("td", {}, el("strong", { text: a.address }),
          a.aliases.length ? el("div", { class: "note", text: a.aliases.join(", ") }) : null,
          el("div", { class: "note", text: a.upstream + " (" + a.tls + ")" })),
        cred,
        el("td", { class: "nowrap", text: a.daily_limit + " messages, " + a.daily_recipient_limit + " recipients" }),
        el("td", {}, el("span", { class: "badge " + a.status, text: STATUS_TEXT[a.status] || a.status })),
        el("td", { class: "nowrap" },
          el("button", { type: "button", class: "small", onclick: () => openRotate(a.address), text: "Rotate" }), " ",
          el("button", { type: "button", class: "small secondary", disabled: !prev, onclick: () => rollback(a.address), text: "Roll back" }), " ",
          el("button", { type: "button", class: "small danger", onclick: () => removeAccount(a.address), text: "Remove" }))));
    }
    if (!r.data.accounts.length)
      body.append(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "No accounts yet." })));
    if (!keepFlash) flash("");
  }

  async function addAccount(ev) {
    ev.preventDefault();
    const aliases = $("add-aliases").value.split(",").map((s) => s.trim()).filter((s) => s);
    const body = {
      address: $("add-address").value.trim(), password: $("add-password").value, aliases,
      daily_limit: Number($("add-daily").value) || null,
      daily_recipient_limit: Number($("add-rcpt").value) || null,
      verify: $("add-verify").checked
    };
    if ($("add-upstream").value.trim()) body.upstream = $("add-upstream").value.trim();
    if ($("add-tls").value) body.tls = $("add-tls").value;
    $("add-submit").disabled = true;
    const r = await api("POST", "/accounts", body);
    $("add-password").value = "";
    $("add-submit").disabled = false;
    if (r.status === 201) {
      resultBox($("add-result"), true, "Added " + r.data.address + ".", r.data.upstream_reply);
      $("add-form").reset();
      loadAccounts(true);
    } else {
      resultBox($("add-result"), false, r.data.error || ("failed (" + r.status + ")"), r.data.upstream_reply);
    }
  }

  /* ---- Audit ------------------------------------------------------------- */

  function auditQuery(withPaging) {
    const p = new URLSearchParams();
    const map = { since: "f-since", until: "f-until", account: "f-account", client: "f-client",
      sender: "f-sender", status: "f-status", event: "f-event" };
    for (const [k, id] of Object.entries(map)) {
      const v = $(id).value.trim();
      if (v) p.set(k, v);
    }
    $("audit-csv").href = API + "/audit.csv" + (p.toString() ? "?" + p.toString() : "");
    if (withPaging) {
      p.set("limit", String(AUDIT_PAGE));
      if (auditCursor) p.set("cursor", auditCursor);
    }
    return p.toString();
  }

  function detailText(e) {
    if (e.event === "message") return e.subject === null || e.subject === undefined ? "" : e.subject;
    if (e.event === "reject") return e.reason || "";
    if (e.event === "account") return (e.action || "") + (e.version ? " v" + e.version : "") + (e.by ? " by " + e.by : "");
    if (e.event === "admin") return (e.action || "") + (e.user ? " " + e.user : "") + (e.reason ? " (" + e.reason + ")" : "");
    return e.action || "";
  }

  function auditRow(e) {
    const detail = el("tr", { class: "detail", hidden: true },
      el("td", { colspan: "8" }, el("pre", { text: JSON.stringify(e, null, 2) })));
    const rcpts = Array.isArray(e.rcpt_to) ? e.rcpt_to.join(", ") : "";
    const client = e.client_name || e.client_ip ? (e.client_name || "") + (e.client_ip ? " " + e.client_ip : "") : (e.ip || "");
    const status = e.status || e.action || "";
    const row = el("tr", { class: "entry", tabindex: "0", title: "show the full record" },
      el("td", { class: "nowrap", text: fmtTime(e.ts) }),
      el("td", { class: "nowrap", text: e.event || "" }),
      el("td", { text: e.account || "" }),
      el("td", { text: client.trim() }),
      el("td", { class: "sender", text: e.mail_from === "" ? "<>" : (e.mail_from || "") }),
      el("td", { text: rcpts }),
      el("td", { class: "subject", text: detailText(e) }),
      el("td", { class: "nowrap" + (e.status ? " status-" + e.status : ""), text: status }));
    const toggle = () => { detail.hidden = !detail.hidden; };
    row.addEventListener("click", toggle);
    row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") toggle(); });
    return [row, detail];
  }

  async function loadAudit() {
    const r = await api("GET", "/audit?" + auditQuery(true));
    const body = $("audit-table").tBodies[0];
    clear(body);
    if (r.status !== 200) { flash(r.data.error || "cannot load the audit log", true); return; }
    for (const e of r.data.entries) body.append(...auditRow(e));
    if (!r.data.entries.length)
      body.append(el("tr", {}, el("td", { colspan: "8", class: "empty", text: "No matching entries." })));
    auditNext = r.data.next_cursor;
    $("audit-older").disabled = !auditNext;
    $("audit-newer").disabled = auditCursors.length === 0;
    $("audit-page").textContent = "page " + (auditCursors.length + 1);
  }

  /* ---- Queue ------------------------------------------------------------- */

  async function queueAction(id, action) {
    if (action === "delete" && !(await confirmBox("Delete queued message " + id + "? It will not be delivered."))) return;
    const r = action === "retry"
      ? await api("POST", "/queue/" + encodeURIComponent(id) + "/retry")
      : await api("DELETE", "/queue/" + encodeURIComponent(id));
    flash(r.status === 200 ? (action === "retry" ? "Retrying " : "Deleted ") + id + "." : (r.data.error || action + " failed"), r.status !== 200);
    loadQueue(true);
  }

  function fmtRcpts(m) {
    const shown = m.rcpts || [];
    const more = (m.rcpt_count || shown.length) - shown.length;
    return shown.join(", ") + (more > 0 ? " (+" + more + " more)" : "");
  }

  async function loadQueue(keepFlash) {
    const r = await api("GET", "/queue");
    const body = $("queue-table").tBodies[0];
    clear(body);
    if (r.status !== 200) { flash(r.data.error || "cannot load the queue", true); return; }
    const msgs = r.data.messages || [];
    const c = r.data.counts || {};
    $("queue-note").textContent = r.data.mode === "direct"
      ? "Delivery is direct: messages go upstream while the client waits and are never stored, so the queue stays empty."
      : r.data.depth + " message" + (r.data.depth === 1 ? "" : "s") + " waiting (" + (c.active || 0) +
        " active, " + (c.deferred || 0) + " deferred, " + (c.held || 0) + " held), " + (c.failed || 0) +
        " failed." + (r.data.truncated ? " Showing the oldest " + msgs.length + "." : "");
    for (const m of msgs) {
      const id = m.id;
      const why = [m.hold_reason, m.last_reply].filter((x) => x).join("\n") ||
        (m.status === "active" ? "(sending or due now)" : "");
      body.append(el("tr", { "data-id": id },
        el("td", { class: "nowrap", title: fmtSize(m.size) + ", received " + fmtTime(m.received), text: id }),
        el("td", { text: m.account || "" }),
        el("td", { text: m.from === "" ? "<>" : (m.from || "") }), el("td", { text: fmtRcpts(m) }),
        el("td", { class: "nowrap status-" + (m.status || ""), text: m.status || "" }),
        el("td", { text: String(m.attempts ?? "") }),
        el("td", { class: "nowrap", text: m.status === "failed" ? "— (failed)" : fmtTime(m.next_attempt) }),
        el("td", {}, el("pre", { class: "reply", text: why })),
        el("td", { class: "nowrap" },
          el("button", { type: "button", class: "small", onclick: () => queueAction(id, "retry"), text: "Retry" }), " ",
          el("button", { type: "button", class: "small danger", onclick: () => queueAction(id, "delete"), text: "Delete" }))));
    }
    if (!msgs.length) body.append(el("tr", {}, el("td", { colspan: "9", class: "empty", text: "The queue is empty." })));
    if (!keepFlash) flash("");
  }

  /* ---- Start ------------------------------------------------------------- */

  document.addEventListener("DOMContentLoaded", async () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("rotate-form").addEventListener("submit", rotate);
    $("rotate-cancel").addEventListener("click", () => { $("rotate-panel").hidden = true; });
    $("add-form").addEventListener("submit", addAccount);
    $("audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); auditCursors = []; auditCursor = ""; loadAudit(); });
    $("audit-reset").addEventListener("click", () => { $("audit-form").reset(); auditCursors = []; auditCursor = ""; loadAudit(); });
    $("audit-older").addEventListener("click", () => { auditCursors.push(auditCursor); auditCursor = auditNext; loadAudit(); });
    $("audit-newer").addEventListener("click", () => { auditCursor = auditCursors.pop() || ""; loadAudit(); });
    for (const id of ["f-since", "f-until", "f-account", "f-client", "f-sender", "f-status", "f-event"])
      $(id).addEventListener("change", () => auditQuery(false));
    window.addEventListener("hashchange", route);
    const r = await api("GET", "/session");
    if (r.status === 200) signedIn(r.data.user, r.data.csrf_token);
    else showLogin("");
  });
})();

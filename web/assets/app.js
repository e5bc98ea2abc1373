// confab watch page: a read-only client of the gateway protocol
// (docs/gateway-frames.md). Every piece of text from the network goes into
// the page through textContent or text nodes: it is never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PAGE = 50;            // history page size
  const SEARCH_SCAN = 5000;   // records scanned per channel by the in-browser search
  const SEARCH_MAX = 200;     // results shown
  const WHO_EVERY = 10000;    // presence refresh, ms
  const INFO_EVERY = 15000;   // channel list refresh, ms

  // ---- token: from the fragment (never sent to the server), kept for reloads
  let token = "";
  {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      token = decodeURIComponent(m[1]);
      try { sessionStorage.setItem("confab.token", token); } catch (_) { /* private mode */ }
      const ch = /(?:^|[#&])channel=([^&]+)/.exec(location.hash);
      history.replaceState(null, "", location.pathname + (ch ? "#channel=" + ch[1] : ""));
    } else {
      try { token = sessionStorage.getItem("confab.token") || ""; } catch (_) { /* ignore */ }
    }
  }

  // ---- state
  const state = {
    ws: null,
    welcomed: false,
    node: null,            // welcome
    info: null,
    reqSeq: 0,
    pending: new Map(),    // req -> {resolve, reject}
    channels: new Map(),   // name -> channel state
    peers: new Map(),      // id -> peer (who "")
    members: [],           // who <current>
    current: "",
    lastCursor: "",        // newest cursor seen on the subscription, to resume
    failures: 0,
    searchFrame: undefined, // does the gateway answer "search"? unknown until tried
    search: null,          // {query, token}
  };

  function chan(name) {
    let c = state.channels.get(name);
    if (!c) {
      c = { name, records: [], early: [], ids: new Set(), loaded: false, more: true, loading: false, unread: 0 };
      state.channels.set(name, c);
    }
    return c;
  }

  // ---- helpers
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const shortId = (id) => (id && id.length > 10 ? "…" + id.slice(-6) : id || "");
  const hue = (s) => { let h = 0; for (const ch of s || "") h = (h * 31 + ch.charCodeAt(0)) >>> 0; return "hue-" + (h % 12); };
  const initials = (name) => {
    const parts = String(name || "?").replace(/[^\p{L}\p{N}]+/gu, " ").trim().split(/\s+/);
    const s = parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] || "?").slice(0, 2);
    return s.toUpperCase();
  };
  const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const fmtFull = (ms) => new Date(ms).toLocaleString();
  const dayKey = (ms) => new Date(ms).toDateString();
  const fmtDay = (ms) => {
    const d = new Date(ms), now = new Date();
    if (d.toDateString() === now.toDateString()) return "Today";
    const y = new Date(now); y.setDate(now.getDate() - 1);
    if (d.toDateString() === y.toDateString()) return "Yesterday";
    return d.toLocaleDateString([], { weekday: "short", year: "numeric", month: "short", day: "numeric" });
  };
  const ago = (ms) => {
    if (!ms) return "";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 45) return "just now";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  };
  const displayChannel = (name) => {
    if (name.startsWith("@")) {
      const p = state.peers.get(name.slice(1));
      return "@" + (p && p.name ? p.name : shortId(name.slice(1)));
    }
    if (name.startsWith("~")) return "~" + name.slice(1, 9) + "…";
    return name;
  };

  // ---- connection
  function setStatus(s, text) {
    $("status").dataset.state = s;
    $("status-text").textContent = text || s;
  }

  function connect() {
    if (!token) {
      setStatus("denied", "no token");
      showEmpty("This page needs its read-only token. Open the full address that `confab up --web` printed (it ends in #token=…).");
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/v1?token=" + encodeURIComponent(token));
    state.ws = ws;
    state.welcomed = false;
    setStatus("connecting", state.failures ? "reconnecting" : "connecting");
    ws.onmessage = (e) => {
      let f;
      try { f = JSON.parse(e.data); } catch (_) { return; }
      onFrame(f);
    };
    ws.onclose = (e) => {
      if (state.ws !== ws) return;
      for (const p of state.pending.values()) p.reject(new Error("connection closed"));
      state.pending.clear();
      state.failures++;
      if (!state.welcomed && state.failures >= 3) {
        setStatus("denied", "refused");
        showEmpty("The node refused this page. The token may be wrong or stale: open the address `confab up --web` printed.");
      } else {
        setStatus("offline", "reconnecting");
      }
      const delay = e.code === 4008 ? 100 : Math.min(30000, 500 * 2 ** Math.min(state.failures, 6));
      setTimeout(connect, delay);
    };
  }

  function request(frame) {
    return new Promise((resolve, reject) => {
      const ws = state.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) { reject(new Error("not connected")); return; }
      const req = String(++state.reqSeq);
      frame.req = req;
      state.pending.set(req, { resolve, reject });
      ws.send(JSON.stringify(frame));
    });
  }

  function onFrame(f) {
    switch (f.type) {
      case "welcome":
        state.welcomed = true;
        state.failures = 0;
        state.node = f;
        setStatus("live", "live");
        start();
        return;
      case "event":
        onRecord(f.record);
        return;
      case "live":
        return;
      case "error":
        if (f.req && state.pending.has(f.req)) {
          const p = state.pending.get(f.req);
          state.pending.delete(f.req);
          const err = new Error(f.message || f.code);
          err.code = f.code;
          p.reject(err);
        } else if (f.code === "resume" && f.cursor) {
          state.lastCursor = f.cursor; // the server closes with 4008; we resume from here
        }
        return;
      default:
        if (f.req && state.pending.has(f.req)) {
          const p = state.pending.get(f.req);
          state.pending.delete(f.req);
          p.resolve(f);
        }
    }
  }

  async function start() {
    try {
      await refreshInfo();
      const sub = { type: "subscribe" };
      if (state.lastCursor) sub.since = state.lastCursor;
      await request(sub);
      await refreshWho();
      if (!state.current) {
        const want = decodeURIComponent((/#channel=([^&]+)/.exec(location.hash) || [])[1] || "");
        const names = [...state.channels.keys()];
        const first = (want && state.channels.has(want)) ? want : (names.find((n) => n.startsWith("#")) || names[0]);
        if (first) selectChannel(first);
        else showEmpty("This node has not joined any channel yet.");
      } else if (chan(state.current).loaded && chan(state.current).records.length === 0) {
        loadOlder(state.current);
      }
    } catch (e) {
      console.warn("confab: start:", e);
    }
  }

  async function refreshInfo() {
    const r = await request({ type: "info" });
    state.info = r.info || {};
    $("node-name").textContent = state.info.name || state.node.name || "node";
    $("node-id").textContent = state.info.id || state.node.node || "";
    $("node-id").title = state.info.id || "";
    for (const name of state.info.channels || []) chan(name);
    renderChannels();
  }

  async function refreshWho() {
    const all = await request({ type: "who" });
    state.peers.clear();
    for (const p of all.peers || []) state.peers.set(p.id, p);
    renderAgents();
    if (state.current) {
      const r = await request({ type: "who", channel: state.current });
      state.members = r.peers || [];
      renderMembers();
    }
  }

  // ---- records
  function onRecord(rec) {
    if (!rec || !rec.envelope) return;
    const env = rec.envelope;
    if (rec.cursor > state.lastCursor) state.lastCursor = rec.cursor;
    const isNew = !state.channels.has(env.channel);
    const c = chan(env.channel);
    if (c.ids.has(env.id)) return;
    if (!c.loaded) {
      // Its history loads when it is opened; keep what arrives meanwhile
      // (a record stored after the history read may arrive before its reply).
      c.early.push(rec);
      if (c.early.length > 1000) c.early.shift();
      if (env.channel !== state.current) c.unread++;
      renderChannels();
      return;
    }
    c.ids.add(env.id);
    const last = c.records[c.records.length - 1];
    c.records.push(rec);
    if (last && rec.cursor < last.cursor) c.records.sort((a, b) => (a.cursor < b.cursor ? -1 : a.cursor > b.cursor ? 1 : 0));
    if (env.channel === state.current) {
      const conv = $("conversation");
      const atBottom = conv.scrollHeight - conv.scrollTop - conv.clientHeight < 120;
      if (last && rec.cursor < last.cursor) renderMessages(false);
      else appendMessage(rec, last);
      if (atBottom) scrollToBottom(); else $("jump").hidden = false;
    } else {
      c.unread++;
    }
    if (isNew || env.channel !== state.current) renderChannels();
  }

  async function loadOlder(name) {
    const c = chan(name);
    if (c.loading || (c.loaded && !c.more)) return;
    c.loading = true;
    $("older-state").textContent = "Loading…";
    $("older-btn").hidden = true;
    try {
      const before = c.records.length ? c.records[0].cursor : "";
      const r = await request({ type: "history", channel: name, before, limit: PAGE });
      const fresh = (r.records || []).filter((x) => x.envelope && !c.ids.has(x.envelope.id));
      for (const x of fresh) c.ids.add(x.envelope.id);
      c.records = fresh.concat(c.records);
      const first = !c.loaded;
      if (first) {
        for (const x of c.early) {
          if (!c.ids.has(x.envelope.id)) { c.ids.add(x.envelope.id); c.records.push(x); }
        }
        c.early = [];
        c.records.sort((a, b) => (a.cursor < b.cursor ? -1 : a.cursor > b.cursor ? 1 : 0));
      }
      c.more = !!r.more;
      c.loaded = true;
      if (name === state.current) {
        const conv = $("conversation");
        const fromBottom = conv.scrollHeight - conv.scrollTop;
        renderMessages(false);
        if (first) scrollToBottom(); else conv.scrollTop = conv.scrollHeight - fromBottom;
      }
    } catch (e) {
      if (name === state.current) $("older-state").textContent = "Could not load history: " + e.message;
      c.loading = false;
      return;
    }
    c.loading = false;
    if (name === state.current) updateOlder();
  }

  function updateOlder() {
    const c = chan(state.current);
    $("older-btn").hidden = !c.more;
    $("older-state").textContent = c.more ? "" : (c.records.length ? "Beginning of " + displayChannel(c.name) : "No messages yet");
  }

  // ---- rendering
  function renderChannels() {
    const ul = $("channels");
    ul.replaceChildren();
    const names = [...state.channels.keys()].sort((a, b) => {
      const rank = (n) => (n.startsWith("#") ? 0 : n.startsWith("~") ? 1 : 2);
      return rank(a) - rank(b) || a.localeCompare(b);
    });
    for (const name of names) {
      const c = state.channels.get(name);
      const li = el("li");
      const b = el("button");
      b.type = "button";
      b.dataset.channel = name;
      if (name === state.current) b.setAttribute("aria-current", "true");
      if (name.startsWith("~")) { const l = el("span", "lock", "🔒"); l.title = "private channel (shown because this node is a member)"; b.append(l); }
      const n = el("span", "chan-name", displayChannel(name));
      n.title = name;
      b.append(n);
      if (c.unread > 0 && name !== state.current) b.append(el("span", "unread", c.unread > 99 ? "99+" : c.unread));
      b.addEventListener("click", () => { selectChannel(name); closeDrawers(); });
      li.append(b);
      ul.append(li);
    }
  }

  function personRow(p) {
    const li = el("li");
    const av = el("div", "avatar small presence " + hue(p.id) + " st-" + (p.status || "unknown"), initials(p.name));
    av.title = p.status || "unknown";
    const who = el("div", "who");
    const nm = el("div", "who-name", p.name || shortId(p.id));
    nm.title = p.id;
    who.append(nm);
    const meta = el("div", "who-meta", [p.status || "", p.last_seen ? "seen " + ago(p.last_seen) : ""].filter(Boolean).join(" · "));
    who.append(meta);
    if (p.caps && p.caps.length) who.append(capsEl(p.caps));
    li.append(av, who);
    return li;
  }

  function capsEl(caps) {
    const s = el("span", "caps");
    for (const c of caps.slice(0, 8)) s.append(el("span", "cap", c));
    return s;
  }

  function renderAgents() {
    const ul = $("agents");
    ul.replaceChildren();
    const peers = [...state.peers.values()].sort((a, b) => (a.name || "").localeCompare(b.name || ""));
    for (const p of peers) ul.append(personRow(p));
    $("agent-count").textContent = peers.length ? String(peers.length) : "";
  }

  function renderMembers() {
    const ul = $("member-list");
    ul.replaceChildren();
    for (const p of state.members) ul.append(personRow(p));
    $("member-count").textContent = state.members.length ? String(state.members.length) : "";
    const online = state.members.filter((p) => p.status && p.status !== "offline").length;
    $("channel-sub").textContent = state.members.length ? `${state.members.length} member${state.members.length === 1 ? "" : "s"} · ${online} online` : "";
  }

  function selectChannel(name) {
    state.current = name;
    const c = chan(name);
    c.unread = 0;
    $("channel-title").textContent = displayChannel(name);
    $("channel-title").title = name;
    $("channel-sub").textContent = "";
    $("results").hidden = true;
    $("jump").hidden = true;
    try { history.replaceState(null, "", location.pathname + "#channel=" + encodeURIComponent(name)); } catch (_) { /* ignore */ }
    renderChannels();
    renderMessages(true);
    if (!c.loaded) loadOlder(name); else updateOlder();
    state.members = [];
    renderMembers();
    request({ type: "who", channel: name }).then((r) => {
      if (state.current !== name) return;
      state.members = r.peers || [];
      renderMembers();
    }).catch(() => {});
  }

  function renderMessages(scroll) {
    const c = chan(state.current);
    const ol = $("messages");
    ol.replaceChildren();
    let prev = null;
    for (const rec of c.records) {
      appendMessage(rec, prev);
      prev = rec;
    }
    if (c.loaded && c.records.length === 0) showEmpty("No messages in " + displayChannel(c.name) + " yet. New ones appear here live.");
    else $("empty").hidden = true;
    if (scroll) scrollToBottom();
  }

  function appendMessage(rec, prev) {
    const ol = $("messages");
    const env = rec.envelope;
    if (!prev || dayKey(prev.envelope.ts) !== dayKey(env.ts)) ol.append(el("li", "day", fmtDay(env.ts)));
    const cont = prev && prev.envelope.from === env.from && env.kind === "msg" && prev.envelope.kind === "msg" &&
      dayKey(prev.envelope.ts) === dayKey(env.ts) && env.ts - prev.envelope.ts < 5 * 60 * 1000;
    ol.append(messageEl(rec, { cont }));
    $("empty").hidden = true;
  }

  const KINDS = {
    call: ["kind-call", "Call"],
    "call-accept": ["kind-call", "Call accepted"],
    "call-reject": ["kind-call", "Call declined"],
    "bundle-offer": ["kind-bundle", "Bundle offer"],
    knock: ["kind-knock", "Session knock"],
  };

  function kindInfo(kind) {
    if (KINDS[kind]) return KINDS[kind];
    if (kind.startsWith("call")) return ["kind-call", kind];
    if (kind.startsWith("bundle")) return ["kind-bundle", kind];
    if (kind.startsWith("knock") || kind.startsWith("session")) return ["kind-knock", kind];
    if (kind === "presence" || kind === "card") return ["kind-system", kind];
    return ["kind-other", kind];
  }

  // Icons as SVG paths built with the DOM (no emoji font needed, no markup parsing).
  const ICONS = {
    "kind-call": ["M5 4h4l2 5-2.5 1.5a11 11 0 0 0 5 5L15 13l5 2v4a2 2 0 0 1-2 2A16 16 0 0 1 3 6a2 2 0 0 1 2-2z"],
    "kind-bundle": ["M21 8l-9-5-9 5 9 5 9-5z", "M3 8v8l9 5 9-5V8", "M12 13v8"],
    "kind-knock": ["M6 21V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v17", "M3 21h18", "M14 12h.01"],
    "kind-other": ["M12 3v18", "M3 12h18"],
    "kind-system": ["M12 3v18", "M3 12h18"],
  };
  function icon(cls) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    for (const d of ICONS[cls] || []) {
      const p = document.createElementNS(NS, "path");
      p.setAttribute("d", d);
      svg.append(p);
    }
    return svg;
  }

  function messageEl(rec, opts) {
    const env = rec.envelope;
    const li = el("li", "msg");
    li.dataset.id = env.id;
    li.dataset.cursor = rec.cursor;
    li.dataset.kind = env.kind;
    if (opts.cont) li.classList.add("cont");
    const peer = state.peers.get(env.from);
    const av = el("div", "avatar " + hue(env.from), initials(env.name));
    av.setAttribute("aria-hidden", "true");
    const body = el("div", "body");
    const meta = el("div", "meta");
    const name = el("span", "name", env.name || shortId(env.from));
    name.title = env.from;
    const pid = el("span", "pid mono", shortId(env.from));
    pid.title = env.from;
    meta.append(name, pid);
    if (peer && peer.caps && peer.caps.length) meta.append(capsEl(peer.caps));
    meta.append(verifiedEl(env));
    const t = el("time", "", fmtTime(env.ts));
    t.dateTime = new Date(env.ts).toISOString();
    t.title = fmtFull(env.ts) + " (author's clock) · seq " + env.seq;
    meta.append(t);
    body.append(meta);
    if (env.kind === "msg") {
      body.append(contentEl(env.content, opts.highlight));
    } else {
      const [cls, label] = kindInfo(env.kind);
      li.classList.add(cls);
      body.append(cardEl(env, cls, label, opts.highlight));
    }
    if (env.reply_to) body.append(el("div", "reply", "↪ reply to " + env.reply_to.slice(0, 12)));
    li.append(av, body);
    return li;
  }

  function contentEl(text, highlight) {
    const d = el("div", "content");
    appendHighlighted(d, text, highlight);
    return d;
  }

  // appendHighlighted adds text to parent as text nodes, wrapping matches of
  // q in <mark> elements. Never parses the text as HTML.
  function appendHighlighted(parent, text, q) {
    text = String(text);
    if (!q) { parent.append(document.createTextNode(text)); return; }
    const low = text.toLowerCase(), ql = q.toLowerCase();
    let i = 0;
    for (;;) {
      const j = low.indexOf(ql, i);
      if (j < 0) break;
      if (j > i) parent.append(document.createTextNode(text.slice(i, j)));
      parent.append(el("mark", "", text.slice(j, j + q.length)));
      i = j + q.length;
    }
    if (i < text.length) parent.append(document.createTextNode(text.slice(i)));
  }

  function cardEl(env, cls, label, highlight) {
    const card = el("div", "event-card");
    const badge = el("span", "badge kind-badge");
    badge.append(icon(cls), document.createTextNode(label));
    card.append(badge);
    let obj = null;
    try { const v = JSON.parse(env.content); if (v && typeof v === "object" && !Array.isArray(v)) obj = v; } catch (_) { /* plain text */ }
    if (obj) {
      const dl = el("dl");
      for (const [k, v] of Object.entries(obj).slice(0, 12)) {
        dl.append(el("dt", "", k));
        const dd = el("dd");
        appendHighlighted(dd, typeof v === "string" ? v : JSON.stringify(v), highlight);
        dl.append(dd);
      }
      card.append(dl);
    } else if (env.content) {
      card.append(contentEl(env.content, highlight));
    }
    return card;
  }

  // ---- signatures: the node verified every envelope before storing it;
  // where the browser has WebCrypto Ed25519 (secure contexts: https or
  // localhost) the page checks again itself.
  const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  function base58(s) {
    const bytes = [0];
    for (const ch of s) {
      const v = B58.indexOf(ch);
      if (v < 0) throw new Error("base58");
      let carry = v;
      for (let i = 0; i < bytes.length; i++) { carry += bytes[i] * 58; bytes[i] = carry & 0xff; carry >>= 8; }
      while (carry) { bytes.push(carry & 0xff); carry >>= 8; }
    }
    for (const ch of s) { if (ch === "1") bytes.push(0); else break; }
    return new Uint8Array(bytes.reverse());
  }
  function signingBytes(env) {
    const enc = new TextEncoder();
    const parts = [];
    const field = (s) => { const b = enc.encode(s || ""); const n = new Uint8Array(4); new DataView(n.buffer).setUint32(0, b.length); parts.push(n, b); };
    const u64 = (x) => { const n = new Uint8Array(8); new DataView(n.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(x))); parts.push(n); };
    field("confab/envelope/v1"); field(env.channel); field(env.from); field(env.name);
    u64(env.seq); u64(env.ts);
    field(env.kind); field(env.content); field(env.reply_to);
    let len = 0; for (const p of parts) len += p.length;
    const out = new Uint8Array(len); let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  const keyCache = new Map();
  let ed25519 = !!(window.crypto && crypto.subtle) ? undefined : false; // undefined: not probed yet
  async function verifyInBrowser(env) {
    if (ed25519 === false) return null;
    let key = keyCache.get(env.from);
    if (!key) {
      const raw = base58(env.from);
      // identity multihash (0x00, 0x24) of a protobuf PublicKey {Type: Ed25519 (0x08 0x01), Data (0x12 0x20)}
      if (raw.length !== 38 || raw[0] !== 0 || raw[1] !== 36 || raw[2] !== 8 || raw[3] !== 1 || raw[4] !== 18 || raw[5] !== 32) return false;
      try {
        key = await crypto.subtle.importKey("raw", raw.slice(6), { name: "Ed25519" }, false, ["verify"]);
        ed25519 = true;
      } catch (_) {
        ed25519 = false;
        return null;
      }
      keyCache.set(env.from, key);
    }
    const data = signingBytes(env);
    const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
    const hex = [...sum].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (hex !== env.id) return false;
    const sig = Uint8Array.from(atob(env.sig || ""), (c) => c.charCodeAt(0));
    return crypto.subtle.verify({ name: "Ed25519" }, key, sig, data);
  }
  const verdicts = new Map(); // id -> true/false/null
  function verifiedEl(env) {
    const v = el("span", "verified", "✓");
    v.title = "Signature verified by the node";
    v.setAttribute("role", "img");
    v.setAttribute("aria-label", "verified");
    const show = (ok) => {
      if (ok === true) { v.classList.add("browser"); v.title = "Signature verified by the node and by this browser (Ed25519)"; }
      else if (ok === false) { v.classList.add("bad"); v.textContent = "!"; v.title = "This browser could not verify the signature"; v.setAttribute("aria-label", "signature check failed"); }
    };
    if (verdicts.has(env.id)) show(verdicts.get(env.id));
    else verifyInBrowser(env).then((ok) => { verdicts.set(env.id, ok); show(ok); }, () => verdicts.set(env.id, null));
    return v;
  }

  // ---- search: the gateway's "search" frame when it has one, else a scan of
  // recent history in the browser.
  async function search(q) {
    const my = {};
    state.search = my;
    $("results").hidden = false;
    $("results-title").textContent = "Searching for “" + q + "”…";
    const list = $("result-list");
    list.replaceChildren();
    let hits = [];
    let how = "";
    let scan = state.searchFrame === false;
    if (!scan) {
      try {
        const r = await request({ type: "search", query: q, limit: SEARCH_MAX });
        state.searchFrame = true;
        hits = r.records || [];
      } catch (e) {
        // No index on this gateway: scan from now on. A query the index
        // refuses (one-letter words, too many words): scan for this one.
        if (e.code === "unknown_type" || e.code === "unsupported") state.searchFrame = false;
        else if (e.code !== "bad_frame") throw e;
        scan = true;
      }
    }
    if (scan) {
      how = " (recent history scanned in this browser)";
      const ql = q.toLowerCase();
      const names = [...state.channels.keys()];
      if (state.current) names.sort((a, b) => (a === state.current ? -1 : b === state.current ? 1 : 0));
      for (const name of names) {
        let before = "", scanned = 0;
        while (scanned < SEARCH_SCAN && hits.length < SEARCH_MAX) {
          let r;
          try { r = await request({ type: "history", channel: name, before, limit: 500 }); } catch (_) { break; }
          if (state.search !== my) return;
          const recs = r.records || [];
          for (let i = recs.length - 1; i >= 0; i--) {
            const env = recs[i].envelope;
            if ((env.content || "").toLowerCase().includes(ql) || (env.name || "").toLowerCase().includes(ql)) hits.push(recs[i]);
          }
          scanned += recs.length;
          if (!r.more || !recs.length) break;
          before = recs[0].cursor;
        }
      }
      hits.sort((a, b) => (a.cursor < b.cursor ? 1 : -1));
    }
    if (state.search !== my) return;
    hits = hits.slice(0, SEARCH_MAX);
    $("results-title").textContent = `${hits.length} result${hits.length === 1 ? "" : "s"} for “${q}”${how}`;
    for (const rec of hits) {
      const li = messageEl(rec, { highlight: q });
      li.classList.add("result");
      li.querySelector(".meta").prepend(el("span", "chan", displayChannel(rec.envelope.channel)));
      li.addEventListener("click", () => openResult(rec));
      list.append(li);
    }
  }

  async function openResult(rec) {
    const name = rec.envelope.channel;
    if (name !== state.current) selectChannel(name);
    $("results").hidden = true;
    const c = chan(name);
    for (let i = 0; i < 40 && !c.ids.has(rec.envelope.id) && (c.more || !c.loaded); i++) {
      if (c.loading) { await new Promise((r) => setTimeout(r, 50)); continue; }
      await loadOlder(name);
    }
    const target = [...$("messages").children].find((x) => x.dataset.id === rec.envelope.id);
    if (target) {
      target.scrollIntoView({ block: "center" });
      target.classList.remove("flash");
      void target.offsetWidth;
      target.classList.add("flash");
    }
  }

  // ---- chrome
  function showEmpty(text) {
    $("empty-text").textContent = text;
    $("empty").hidden = false;
  }
  function scrollToBottom() {
    const conv = $("conversation");
    conv.scrollTop = conv.scrollHeight;
    $("jump").hidden = true;
  }
  function closeDrawers() {
    document.body.classList.remove("show-sidebar", "show-members");
    $("menu").setAttribute("aria-expanded", "false");
    $("people").setAttribute("aria-expanded", "false");
  }
  function toggle(cls, btn) {
    const on = !document.body.classList.contains(cls);
    closeDrawers();
    if (on) { document.body.classList.add(cls); btn.setAttribute("aria-expanded", "true"); }
  }

  function init() {
    $("menu").addEventListener("click", () => toggle("show-sidebar", $("menu")));
    $("people").addEventListener("click", () => toggle("show-members", $("people")));
    $("backdrop").addEventListener("click", closeDrawers);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { closeDrawers(); $("results").hidden = true; }
    });
    $("conversation").addEventListener("scroll", () => {
      const conv = $("conversation");
      if (conv.scrollTop < 80 && state.current) {
        const c = chan(state.current);
        if (c.loaded && c.more && !c.loading) loadOlder(state.current);
      }
      if (conv.scrollHeight - conv.scrollTop - conv.clientHeight < 40) $("jump").hidden = true;
    }, { passive: true });
    $("older-btn").addEventListener("click", () => loadOlder(state.current));
    $("jump").addEventListener("click", scrollToBottom);
    $("search").addEventListener("submit", (e) => {
      e.preventDefault();
      const q = $("search-input").value.trim();
      if (q) search(q).catch((err) => { $("results-title").textContent = "Search failed: " + err.message; });
      $("search-input").blur();
    });
    $("search").addEventListener("click", () => $("search-input").focus());
    $("search-input").title = "Search messages in this node's history";
    $("results-close").addEventListener("click", () => { $("results").hidden = true; state.search = null; });
    setInterval(() => { if (state.welcomed) refreshWho().catch(() => {}); }, WHO_EVERY);
    setInterval(() => { if (state.welcomed) refreshInfo().catch(() => {}); }, INFO_EVERY);
    connect();
  }

  // Hooks for tests and the curious (read-only: nothing here can write).
  window.confab = { state, search, selectChannel, loadOlder };
  init();
})();

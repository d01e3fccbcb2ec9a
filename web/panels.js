// Colony viewer panels: readable views of the coordination feeds and the agent directory.
//
// - render(ns, state, box, nameOf, ctx) draws a feed's state (the namespace's view() from
//   GET /feeds/{feed}, docs/coordination.md) into box: auction/, ledger/, vouch/, task/,
//   lease/, agent/, dm/ (any other namespace with a state: its JSON). It redraws the whole panel each
//   time: app.js calls it at most every few hundred ms while records arrive.
// - The directory (GET /agents, every page) and trust scores (GET /trust/global) are polled
//   with loadDirectory(); agent(key) answers names from it, so names show everywhere, and
//   renderAgents(box) draws the "Agents" overview: a filter, one page of rows at a time.
// Every string from the relay is untrusted: it only ever reaches the DOM through textContent.
"use strict";
(() => {
  const DIR_EVERY = 5000;      // ms between directory refreshes (OVERVIEW_EVERY while it is shown)
  const OVERVIEW_EVERY = 2000;
  const MAX_AGENTS = 20000;    // directory entries held (pages of 1,000)
  const PAGE_ROWS = 100;       // overview rows per page
  const MAX_ROWS = 200;        // rows per table in a feed panel (the rest are counted)
  const SCALE = 1e9;           // trust scores are parts per billion

  // -- small DOM helpers ---------------------------------------------------------------------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const isKey = (s) => typeof s === "string" && /^[0-9a-f]{64}$/.test(s);
  const short = (key) => (typeof key === "string" && key ? key.slice(0, 8) : "?");
  const int = (n) => (typeof n === "number" && Number.isFinite(n) ? n.toLocaleString("en-US") : "–");
  const pct = (ppb) => (typeof ppb === "number" ? (ppb * 100 / SCALE).toFixed(2) + "%" : "–");
  function clock(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms <= 0) return "–";
    const d = new Date(ms);
    const t = d.toLocaleTimeString([], { hour12: false });
    return d.toDateString() === new Date().toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
  }
  function time(ms) {
    const e = el("span", "clock", clock(ms));
    if (typeof ms === "number" && ms > 0 && Number.isFinite(ms)) e.title = new Date(ms).toISOString();
    return e;
  }
  function who(key, nameOf) {  // an agent by name, its key in the tooltip
    if (!isKey(key)) return el("span", "who muted", key == null ? "–" : String(key));
    const e = el("span", "who", nameOf(key));
    e.title = key;
    e.dataset.key = key;
    return e;
  }
  function badge(text, kind) {
    const e = el("span", `badge s-${String(kind || text).replace(/[^a-z-]/g, "")}`, text);
    return e;
  }
  function bar(frac, label) {
    const b = el("span", "bar");
    const f = el("span", "fill");
    f.style.width = `${Math.max(0, Math.min(1, frac || 0)) * 100}%`;
    b.append(f);
    if (label) b.title = label;
    return b;
  }
  function json(value, max = 2000) {
    let text;
    try { text = JSON.stringify(value, null, 2); } catch (e) { text = String(value); }
    if (text === undefined) text = "null";
    return el("pre", "pjson", text.length > max ? text.slice(0, max) + "\n…" : text);
  }
  function cell(v) { return v instanceof Node ? v : el("span", null, v == null ? "" : String(v)); }
  function table(cls, cols, rows, total) {  // rows: arrays of strings or nodes
    const t = el("table", "ptable " + (cls || ""));
    const head = el("tr");
    for (const c of cols) head.append(el("th", null, c));
    const thead = el("thead");
    thead.append(head);
    t.append(thead);
    const body = el("tbody");
    for (const r of rows.slice(0, MAX_ROWS)) {
      const tr = el("tr");
      for (const c of r) { const td = el("td"); td.append(cell(c)); tr.append(td); }
      body.append(tr);
    }
    t.append(body);
    const n = total === undefined ? rows.length : total;
    if (n > Math.min(rows.length, MAX_ROWS)) {
      const wrap = el("div");
      wrap.append(t, el("div", "muted", `… and ${int(n - Math.min(rows.length, MAX_ROWS))} more`));
      return wrap;
    }
    return t;
  }
  function section(title, ...kids) {
    const s = el("section", "psec");
    s.append(el("h4", null, title), ...kids.filter(Boolean));
    return s;
  }
  function kv(pairs) {  // [[label, value], ...]: a compact definition list
    const dl = el("dl", "kv");
    for (const [k, v] of pairs) {
      if (v === undefined) continue;
      dl.append(el("dt", null, k));
      const dd = el("dd");
      dd.append(cell(v));
      dl.append(dd);
    }
    return dl;
  }
  function names(keys, nameOf) {
    const span = el("span", "names");
    (keys || []).forEach((k, i) => { if (i) span.append(", "); span.append(who(k, nameOf)); });
    if (!keys || !keys.length) span.append(el("span", "muted", "none"));
    return span;
  }
  function chips(caps) {
    const span = el("span", "caps");
    for (const c of (caps || []).slice(0, 8)) span.append(el("span", "cap", c));
    if (caps && caps.length > 8) span.append(el("span", "muted", ` +${caps.length - 8}`));
    return span;
  }
  function dot(online) {
    const d = el("span", online ? "dot on" : "dot", online ? "●" : "○");
    d.title = online ? "online" : "offline";
    return d;
  }
  const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : {});
  const arr = (v) => (Array.isArray(v) ? v : []);

  // -- the directory and trust scores --------------------------------------------------------
  const dir = { agents: new Map(), list: [], total: 0, trust: new Map(), trustSeq: -1, maxTrust: 0,
                sig: "", at: -Infinity, busy: null, onChange: null };

  async function getJSON(url) {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: ${res.status}`);
    return res.json();
  }
  function cleanName(s, key) { return (typeof s === "string" && s.trim().slice(0, 40)) || short(key); }

  function loadDirectory(force) {
    if (dir.busy) return dir.busy;
    const every = ov.box && !ov.box.hidden ? OVERVIEW_EVERY : DIR_EVERY;
    if (!force && performance.now() - dir.at < every) return Promise.resolve(false);
    dir.busy = (async () => {
      try {
        const list = [];
        let total = Infinity;
        while (list.length < total && list.length < MAX_AGENTS) {
          const j = await getJSON(`agents?limit=1000&offset=${list.length}`);
          total = j.total;
          const page = arr(j.agents).filter((a) => a && isKey(a.key));
          if (!page.length) break;
          list.push(...page);
        }
        let trust = null;
        try { trust = await getJSON("trust/global"); } catch (e) { /* no trust yet */ }
        let sig = `${trust ? trust.seq : -1}|`;
        for (const a of list) sig += `${a.key}${a.updated}${a.online ? 1 : 0};`;
        if (sig === dir.sig) return false;
        dir.sig = sig;
        dir.agents = new Map();
        dir.list = list.map((a) => {
          const e = { key: a.key, name: cleanName(a.name, a.key), description: typeof a.description === "string" ? a.description.slice(0, 300) : "",
                      capabilities: arr(a.capabilities).filter((c) => typeof c === "string"), online: !!a.online, updated: a.updated };
          e.search = `${e.name}\n${e.description}\n${e.capabilities.join("\n")}\n${e.key}`.toLowerCase();
          dir.agents.set(e.key, e);
          return e;
        });
        dir.total = list.length;
        dir.trust = new Map();
        dir.maxTrust = 0;
        dir.trustSeq = trust ? trust.seq : -1;
        for (const s of arr(trust && trust.scores)) {
          if (!s || !isKey(s.key) || typeof s.score !== "number") continue;
          dir.trust.set(s.key, s.score);
          dir.maxTrust = Math.max(dir.maxTrust, s.score);
        }
        if (ov.box && !ov.box.hidden) drawAgents();
        if (dir.onChange) dir.onChange();
        return true;
      } catch (e) {
        return false;  // relay restarting: the next poll tries again
      } finally {
        dir.at = performance.now();
        dir.busy = null;
      }
    })();
    return dir.busy;
  }

  // -- feed panels ---------------------------------------------------------------------------
  const AUCTION_STATUS = { open: "bidding is open", awarded: "an assignee works on it", completed: "delivered and accepted",
                           failed: "nobody delivered", unawarded: "closed without bids" };

  function auction(s, nameOf) {
    const out = [];
    const p = obj(s.params);
    const dl = obj(s.deadlines);
    const head = el("div", "phead");
    const status = s.status || "new";
    const b = badge(status);
    b.title = AUCTION_STATUS[status] || "";
    head.append(b, el("span", "ptitle", taskTitle(s.task)));
    out.push(head);
    out.push(kv([
      ["requester", who(s.requester, nameOf)],
      ["reward", int(p.reward)],
      ["min stake", int(p.min_stake)],
      ["bid deadline", time(dl.bid)],
      ["result deadline", s.deadlines && dl.result ? time(dl.result) : "–"],
      ["result window", typeof p.result_window === "number" ? `${(p.result_window / 1000).toFixed(1)} s` : "–"],
      ["scoring", p.scoring || "–"],
      ["winner", s.winner ? who(s.winner, nameOf) : "–"],
      ["assignee", s.assignee ? who(s.assignee, nameOf) : "–"],
      ["standby", names(arr(s.standby), nameOf)],
    ]));
    // bids, ranked: the award's ranking once there is one, else by stake (then bid order)
    const bids = arr(s.bids);
    const ranking = arr(s.ranking);
    const standby = arr(s.standby);
    let rows;
    const role = (k) => (k === s.assignee ? badge("assignee", "working") : k === s.winner ? badge("winner", "completed")
      : standby.includes(k) ? badge(`standby ${standby.indexOf(k) + 1}`, "input-required") : "");
    if (ranking.length) {
      rows = ranking.map((r, i) => [String(i + 1), who(r.key, nameOf), int(r.stake), pct(r.trust), int(r.score), role(r.key)]);
    } else {
      rows = bids.slice().sort((x, y) => (y.stake - x.stake) || (x.seq - y.seq))
        .map((r, i) => [String(i + 1), who(r.key, nameOf), int(r.stake), "", "", role(r.key)]);
    }
    out.push(section(`Bids (${bids.length})` + (ranking.length ? " · ranked by the award" : " · by stake"),
      bids.length ? table("bids", ["#", "agent", "stake", "trust", "score", ""], rows) : el("div", "muted", "no bids yet")));
    if (s.result) {
      const r = obj(s.result);
      const sec = section("Result");
      sec.append(kv([["from", who(r.key, nameOf)], ["seq", `#${r.seq}`]]), json(r.result));
      out.push(sec);
    }
    if (s.task !== undefined && s.task !== null && typeof s.task === "object") out.push(section("Task", json(s.task)));
    const hist = arr(s.history);
    const ul = el("ul", "history");
    for (const h of hist.slice(-MAX_ROWS).reverse()) ul.append(historyItem(h, nameOf));
    out.push(section("History", hist.length ? ul : el("div", "muted", "nothing yet")));
    return out;
  }
  function taskTitle(task) {
    if (typeof task === "string") return task;
    const t = obj(task);
    for (const f of ["title", "name", "summary", "goal"]) if (typeof t[f] === "string") return t[f];
    return "(task)";
  }
  function historyItem(h, nameOf) {
    const li = el("li");
    li.dataset.kind = String(h.kind);
    li.append(time(h.at), el("span", "seqn", `#${h.seq}`), el("b", null, h.kind));
    for (const [k, v] of Object.entries(obj(h))) {
      if (["seq", "at", "kind"].includes(k)) continue;
      li.append(el("span", "muted", ` ${k} `));
      if (isKey(v)) li.append(who(v, nameOf));
      else if (Array.isArray(v) && v.every(isKey)) li.append(names(v, nameOf));
      else if (/deadline/.test(k)) li.append(time(v));
      else li.append(el("span", null, JSON.stringify(v)));
    }
    return li;
  }

  function ledger(s, nameOf) {
    const out = [];
    const ops = s.operators;
    out.push(kv([["operators", ops === null || ops === undefined ? "not opened yet" : names(arr(ops), nameOf)]]));
    const bal = Object.entries(obj(s.balances)).map(([k, v]) => [k, obj(v).available || 0, obj(v).locked || 0]);
    bal.sort((a, b) => (b[1] + b[2]) - (a[1] + a[2]) || nameOf(a[0]).localeCompare(nameOf(b[0])) || (a[0] < b[0] ? -1 : 1));
    const supply = bal.reduce((t, b) => t + b[1] + b[2], 0);
    out.push(section(`Balances (${bal.length}) · ${int(supply)} credits in all`,
      bal.length ? table("balances", ["agent", "available", "locked", "total"], bal.map(([k, a, l]) => [who(k, nameOf), int(a), int(l), int(a + l)]))
        : el("div", "muted", "no balances yet")));
    const locks = [];
    for (const [ref, held] of Object.entries(obj(s.locks))) for (const [k, amt] of Object.entries(obj(held))) locks.push([ref, k, amt]);
    if (locks.length) out.push(section(`Locks (${locks.length})`, table("locks", ["ref", "agent", "amount"], locks.map(([r, k, a]) => [r, who(k, nameOf), int(a)]))));
    return out;
  }

  function vouch(s, nameOf) {
    const out = [];
    const scores = Object.entries(obj(s.scores)).filter(([k, v]) => typeof v === "number");
    scores.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const max = scores.length ? Math.max(1, scores[0][1]) : 1;
    out.push(section(`Trust scores (${scores.length}) · EigenTrust, sums to 100%`,
      scores.length ? table("scores", ["#", "agent", "score", ""], scores.map(([k, v], i) => [String(i + 1), who(k, nameOf), pct(v), bar(v / max, pct(v))]))
        : el("div", "muted", "no vouches yet")));
    const vs = arr(s.vouches).slice().sort((a, b) => (b.ts - a.ts) || (a.id < b.id ? -1 : 1));
    const weight = (v) => (v.revoked ? badge("revoked", "cancelled") : `${v.weight > 0 ? "+" : ""}${(v.weight / 1000).toFixed(2)}`);
    if (vs.length) {
      out.push(section(`Vouches (${vs.length}), newest first`, table("vouches", ["time", "from", "for", "weight", "note"],
        vs.map((v) => [time(v.ts), who(v.author, nameOf), who(v.subject, nameOf), weight(v), v.note || ""]))));
    }
    const os = arr(s.outcomes).slice().sort((a, b) => (b.ts - a.ts) || (a.id < b.id ? -1 : 1));
    if (os.length) {
      out.push(section(`Outcomes (${os.length}), recorded by the relay`, table("outcomes", ["time", "agent", "outcome", "ref"],
        os.map((o) => [time(o.ts), who(o.subject, nameOf), badge(o.outcome, o.outcome === "delivered" ? "completed" : "failed"), o.ref]))));
    }
    return out;
  }

  function task(s, nameOf) {
    const out = [];
    const head = el("div", "phead");
    head.append(badge(s.status || "new", s.status === "open" ? "working" : s.status), el("span", "ptitle", s.title || "(untitled)"));
    out.push(head);
    const pr = obj(s.progress);
    const counts = Object.entries(obj(pr.by_status)).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(" · ");
    const overall = el("span", "prog");
    overall.append(bar(pr.total ? pr.done / pr.total : 0), el("span", null, pr.total ? ` ${int(pr.done)}/${int(pr.total)} (${pr.percent}%)` : " no progress reported"));
    out.push(kv([
      ["leader", who(s.leader, nameOf)],
      ["opened", time(s.opened)],
      ["closed", s.closed ? time(s.closed) : undefined],
      ["progress", overall],
      ["subtasks", `${int(pr.subtasks || 0)}${counts ? " · " + counts : ""}${pr.stalled ? ` · ${pr.stalled} stalled` : ""}`],
    ]));
    const subs = arr(s.subtasks);
    const rows = subs.map((t) => {
      const p = t.progress;
      const prog = el("span", "prog");
      if (p && p.total) {
        prog.append(bar(p.done / p.total), el("span", "pnum", `${p.done}/${p.total}`));
        if (p.note) prog.title = p.note;
      } else prog.append(el("span", "muted", "–"));
      const status = el("span");
      status.append(badge(t.status));
      if (t.stalled) status.append(" ", badge("stalled", "failed"));
      if (t.question) status.title = `asks: ${t.question}`;
      const sub = el("span", "sub", t.parent ? `↳ ${t.sub}` : t.sub);
      if (t.parent) sub.title = `under ${t.parent}`;
      const prev = arr(t.previous);
      const asg = el("span");
      asg.append(who(t.assignee, nameOf));
      if (prev.length) { asg.append(el("span", "muted", " (was ")); asg.append(names(prev, nameOf)); asg.append(el("span", "muted", ")")); }
      return [sub, t.title || "", asg, status, prog, t.checkpoint ? `#${t.checkpoint.seq}` : "–", time(t.last_seen)];
    });
    out.push(section(`Subtasks (${subs.length})`, subs.length
      ? table("subtasks", ["sub", "title", "assignee", "status", "progress", "checkpoint", "last seen"], rows) : el("div", "muted", "none spawned yet")));
    if (s.result !== null && s.result !== undefined) out.push(section("Result", json(s.result)));
    return out;
  }

  function agentCard(s, nameOf) {
    const card = el("div", "card");
    const d = dir.agents.get(s.key);
    const h = el("div", "phead");
    h.append(dot(d && d.online), el("span", "ptitle", s.name ? String(s.name) : "(no profile yet)"));
    card.append(h);
    card.append(el("div", "key", s.key || ""));
    if (s.description) card.append(el("p", "desc", s.description));
    const score = dir.trust.get(s.key);
    card.append(kv([
      ["capabilities", arr(s.capabilities).length ? chips(arr(s.capabilities)) : "none listed"],
      ["trust (global)", score === undefined ? "–" : pct(score)],
      ["updated", time(s.updated)],
    ]));
    return [card];
  }

  function dm(s, nameOf, ctx) {
    const out = [];
    const m = /^dm\/([0-9a-f]{64})\.([0-9a-f]{64})$/.exec(ctx.feed || "");
    const pair = el("div", "phead");
    if (m) pair.append(who(m[1], nameOf), el("span", "muted", " ↔ "), who(m[2], nameOf));
    out.push(pair);
    out.push(el("div", "e2e", "Messages are end-to-end encrypted (a NaCl box between the two agents): the relay "
      + "stores and orders them but cannot read them, and this viewer shows metadata only."));
    const count = s ? s.count : ctx.info ? ctx.info.seq : 0;
    out.push(kv([["messages", int(count)]]));
    if (!s) return out;  // members-only: not even the metadata is served to an anonymous viewer
    const msgs = arr(s.messages).slice().reverse();
    if (msgs.length) out.push(section(`Latest ${msgs.length}`, table("dms", ["seq", "from", "re", "id"],
      msgs.map((x) => [`#${x.seq}`, who(x.author, nameOf), x.re ? short(x.re) : "", short(x.id)]))));
    return out;
  }

  // lease/: leader election (docs/coordination.md, "Leases"): holder, epoch, time left, the
  // standby queue in grant order, and the holders so far with their epochs.
  function tickLeft(e) {  // by this machine's clock against the relay's deadline
    e.textContent = `${(Math.max(0, Number(e.dataset.deadline) - Date.now()) / 1000).toFixed(1)} s`;
  }
  setInterval(() => document.querySelectorAll(".lease-left[data-deadline]").forEach(tickLeft), 250);
  function lease(s, nameOf, ctx) {
    const out = [];
    const head = el("div", "phead");
    head.append(badge(s.holder ? "held" : "free", s.holder ? "working" : "submitted"),
      el("span", "ptitle", s.feed || ctx.feed || "lease"));
    out.push(head);
    const left = el("span", "lease-left", "–");
    if (s.holder && typeof s.deadline === "number") { left.dataset.deadline = String(s.deadline); tickLeft(left); }
    out.push(kv([
      ["holder", s.holder ? who(s.holder, nameOf) : "nobody"],
      ["epoch", int(s.epoch)],
      ["time left", left],
      ["ttl", s.holder ? `${int(s.ttl_ms)} ms` : undefined],
      ["granted", s.holder ? time(s.granted) : undefined],
    ]));
    const standby = arr(s.standby);
    out.push(section(`Standby queue (${standby.length})`, standby.length
      ? table("standby", ["#", "agent", "priority", "ttl"],
        standby.map((c, i) => [String(i + 1), who(c.key, nameOf), int(c.priority), `${int(c.ttl_ms)} ms`]))
      : el("div", "muted", "no candidates waiting")));
    const hist = arr(s.history).slice().reverse();
    out.push(section(`Holders (${hist.length})`, hist.length
      ? table("holders", ["epoch", "holder", "granted", "ended", "how"],
        hist.map((h) => [int(h.epoch), who(h.holder, nameOf), time(h.granted), h.ended ? time(h.ended) : "–",
          h.end ? badge(h.end, h.end === "expired" ? "failed" : "completed") : badge("holding", "working")]))
      : el("div", "muted", "never granted yet")));
    return out;
  }

  const RENDER = { auction, ledger, vouch, task, lease, agent: agentCard, dm };

  // Draws state into box; false when there is nothing to show (then box is emptied).
  function render(ns, state, box, nameOf, ctx = {}) {
    let kids = null;
    const fn = RENDER[ns];
    try {
      if (fn && (state || ns === "dm")) kids = fn(state || null, nameOf, ctx);
      else if (state !== null && state !== undefined && typeof state === "object") kids = [json(state, 20000)];
    } catch (e) {
      kids = [el("div", "warn", `cannot show this state: ${e.message}`), json(state, 20000)];
    }
    box.dataset.ns = kids ? ns : "";
    const keep = box.scrollTop;
    box.replaceChildren(...(kids || []));
    box.scrollTop = keep;
    return !!kids;
  }

  // The feed list's label of a dm feed: the two names.
  function label(feed, nameOf) {
    const m = /^dm\/([0-9a-f]{64})\.([0-9a-f]{64})$/.exec(feed);
    return m ? `${nameOf(m[1])} ↔ ${nameOf(m[2])}` : null;
  }

  // -- the Agents overview -------------------------------------------------------------------
  const ov = { box: null, q: "", online: false, page: 0, go: null, parts: null };

  function renderAgents(box, go) {
    ov.go = go;
    if (ov.box !== box) {
      ov.box = box;
      const head = el("div", "ov-head");
      const title = el("h2", null, "Agents");
      const q = el("input");
      q.type = "search";
      q.id = "agents-filter";
      q.placeholder = "Filter by name, description, capability or key";
      q.setAttribute("aria-label", "Filter agents");
      q.addEventListener("input", () => { ov.q = q.value.trim().toLowerCase(); ov.page = 0; drawAgents(); });
      const lab = el("label", "muted");
      const cb = el("input");
      cb.type = "checkbox";
      cb.id = "agents-online";
      cb.addEventListener("change", () => { ov.online = cb.checked; ov.page = 0; drawAgents(); });
      lab.append(cb, " online only");
      const prev = el("button", null, "‹ prev");
      const next = el("button", null, "next ›");
      prev.type = next.type = "button";
      prev.onclick = () => { ov.page--; drawAgents(); };
      next.onclick = () => { ov.page++; drawAgents(); };
      const summary = el("span", "muted");
      summary.id = "agents-summary";
      head.append(title, q, lab, prev, next);
      const t = el("table", "ptable agents");
      const hr = el("tr");
      for (const c of ["", "name", "key", "capabilities", "trust", "", "updated"]) hr.append(el("th", null, c));
      const thead = el("thead");
      thead.append(hr);
      t.append(thead);
      const body = el("tbody");
      body.id = "agents-rows";
      t.append(body);
      const wrap = el("div", "ov-body");
      wrap.append(t);
      const sub = el("div", "ov-sub");
      sub.append(summary);
      box.replaceChildren(head, sub, wrap);
      ov.parts = { summary, prev, next, body, q };
    }
    drawAgents();
    loadDirectory(true);
  }

  function drawAgents() {
    if (!ov.parts) return;
    const { summary, prev, next, body } = ov.parts;
    const q = ov.q;
    const hits = dir.list.filter((a) => (!ov.online || a.online) && (!q || a.search.includes(q)));
    hits.sort((a, b) => (dir.trust.get(b.key) || 0) - (dir.trust.get(a.key) || 0) || (b.online - a.online)
      || a.name.localeCompare(b.name) || (a.key < b.key ? -1 : 1));
    const pages = Math.max(1, Math.ceil(hits.length / PAGE_ROWS));
    ov.page = Math.max(0, Math.min(ov.page, pages - 1));
    const from = ov.page * PAGE_ROWS;
    const shown = hits.slice(from, from + PAGE_ROWS);
    const online = dir.list.reduce((n, a) => n + (a.online ? 1 : 0), 0);
    summary.textContent = `${hits.length === dir.total ? "" : `${int(hits.length)} of `}${int(dir.total)} agents · ${int(online)} online`
      + (hits.length > PAGE_ROWS ? ` · showing ${from + 1}–${from + shown.length}` : "")
      + (dir.trustSeq >= 0 ? ` · trust from vouch/global #${dir.trustSeq}` : "");
    prev.disabled = ov.page === 0;
    next.disabled = ov.page >= pages - 1;
    const max = Math.max(1, dir.maxTrust);
    body.replaceChildren(...shown.map((a) => {
      const tr = el("tr");
      tr.dataset.key = a.key;
      tr.title = a.description ? `${a.name} — ${a.description}` : a.name;
      const score = dir.trust.get(a.key);
      const name = el("span", "who", a.name);
      const cells = [dot(a.online), name, el("span", "key", short(a.key)), chips(a.capabilities),
                     el("span", "num", score === undefined ? "–" : pct(score)), score === undefined ? "" : bar(score / max),
                     time(a.updated)];
      for (const c of cells) { const td = el("td"); td.append(cell(c)); tr.append(td); }
      tr.onclick = () => { if (ov.go) ov.go("agent/" + a.key); };
      return tr;
    }));
  }

  window.ColonyPanels = {
    render,
    label,
    renderAgents,
    loadDirectory,
    agent: (key) => dir.agents.get(key),
    set onChange(fn) { dir.onChange = fn; },
    nsOf: (feed) => (typeof feed === "string" && feed.includes("/") ? feed.slice(0, feed.indexOf("/")) : ""),
    dir,
  };
})();

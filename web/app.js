// Colony viewer: plain JS over the relay's HTTP API and native WebSocket protocol (no build step).
//
// - Feeds: GET /feeds polled every FEEDS_EVERY ms (head seq, participants); a feed whose head
//   moved is highlighted for a moment.
// - The selected feed: its recent records over HTTP, then live over /ws (rec, presence frames).
//   Every record is verified here (web/colony.js: Ed25519 + SHA-256 via WebCrypto): the
//   author's signature and event id, the relay's receipt, and the hash chain link.
// - Documents: the text comes from GET /feeds/{feed}/state, fetched at most every DOC_EVERY ms
//   while records arrive; the time-travel slider asks the same endpoint with ?at=SEQ. The live
//   text is coloured by author (each agent's colour, as on its chip): web/authors.js merges the
//   feed's records with Yjs and maps each Yjs client id to the key that signed it.
// - Names: agents publish profiles in agent/<key> feeds (kind agent.profile, body {name, ...});
//   a profile counts only when <key> itself signed it.
// - Coordination feeds (auction/, ledger/, vouch/, task/, agent/, dm/) show a state panel and the
//   nav has an Agents overview (#@agents): both drawn by web/panels.js (window.ColonyPanels),
//   which also polls the directory (GET /agents) so names show everywhere.
// - Rendering is batched per animation frame and the record list is virtualized (only the
//   visible rows exist in the DOM), so 10,000 records and 100 agents stay cheap.
"use strict";
(() => {
  const C = window.Colony;
  const P = window.ColonyPanels;
  const A = window.ColonyAuthors;
  const $ = (sel) => document.querySelector(sel);
  const ROW = 24;            // px per timeline row (fixed: the list is virtualized)
  const PAGE = 1000;         // records per HTTP page (the relay's maximum)
  const KEEP = 50000;        // records held per timeline; older ones are dropped from memory
  const FEEDS_EVERY = 1500;  // ms between feed list polls
  const DOC_EVERY = 250;     // ms between document fetches while records arrive
  const HOT_MS = 1500;       // how long a feed whose head moved stays highlighted
  const ACTIVE_MS = 3000;    // an author who wrote within this is shown as active
  const PROFILE_FETCHES = 6; // concurrent profile loads

  const st = {
    feeds: new Map(),        // feed -> {feed, seq, participants, hot, li}
    listed: false,
    filter: "",
    current: null,
    gen: 0,                  // bumped on every feed switch; stale async results are dropped
    info: null,
    names: new Map(),        // key -> {name, description}
    profileSeq: new Map(),   // agent feed -> seq of the profile lookup done
    presence: new Set(),
    activity: new Map(),     // key -> Date.now() of its last record in the current feed
    ws: null,
    ready: false,            // socket open and challenge seen
    relayKey: null,
    T: null,                 // timeline of the current feed
    tt: { live: true, at: 0, timer: 0, ctl: null },
    doc: null,               // live document fetch throttle
    authors: null,           // web/authors.js Tracker of the current doc feed
    crypto: "checking",      // "ok" | "unavailable" | "checking"
    panel: null,             // {state, info} of the current non-document feed
    overview: false,         // the Agents overview is shown instead of the feed
  };
  window.viewer = st;  // for the console (and the browser tests)

  // -- helpers -----------------------------------------------------------------------------
  const short = (key) => (key ? key.slice(0, 8) : "?");
  const isKey = (s) => typeof s === "string" && /^[0-9a-f]{64}$/.test(s);
  function nameOf(key) {
    const p = st.names.get(key) || P.agent(key);
    return p ? p.name : key && key === st.relayKey ? "relay" : short(key);
  }
  // Agent colours: the first PALETTE.length keys this page colours get distinct palette colours
  // (slot from the key, the next free one on a collision), so the few agents a watcher compares
  // (a document's authors, a feed's participants) never share one; later keys get a hue from the key.
  const PALETTE = ["#1f6fd1", "#c62828", "#2e7d32", "#7b3fb5", "#d86a00", "#00838f", "#c2185b",
                   "#8d5524", "#3949ab", "#5d6d00"];
  const colours = new Map();  // key -> colour
  const taken = new Set();     // palette slots in use
  function colour(key) {
    let c = colours.get(key);
    if (c) return c;
    const n = PALETTE.length;
    let slot = parseInt(key.slice(0, 6), 16) % n;
    for (let i = 0; i < n && taken.has(slot); i++) slot = (slot + 1) % n;
    if (!taken.has(slot)) {
      taken.add(slot);
      c = PALETTE[slot];
    } else {  // palette exhausted: hue from 3 bytes, lightness from one more
      const h = parseInt(key.slice(0, 6), 16) % 360;
      c = `hsl(${h} 62% ${30 + (parseInt(key.slice(6, 8), 16) % 4) * 6}%)`;
    }
    colours.set(key, c);
    return c;
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setText(e, text) { if (e.textContent !== text) e.textContent = text; }
  async function getJSON(url, opts) {
    const res = await fetch(url, opts);
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = new Error(body.message || `${res.status}`);
      err.status = res.status;
      err.code = body.error;
      throw err;
    }
    return body;
  }
  const feedUrl = (feed) => "feeds/" + feed;  // feed ids are valid URL path characters verbatim
  const isDocFeed = (feed) => feed && feed.startsWith("doc/");
  function clock(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  // -- batched rendering -------------------------------------------------------------------
  const dirty = new Set();
  let raf = 0;
  function schedule(...parts) {
    for (const p of parts) dirty.add(p);
    if (!raf) raf = requestAnimationFrame(flush);
  }
  function flush() {
    raf = 0;
    const d = new Set(dirty);
    dirty.clear();
    if (d.has("feeds")) renderFeeds();
    if (d.has("people")) renderPeople();
    if (d.has("timeline")) renderTimeline();
    if (d.has("tt")) renderSlider();
    if (d.has("panel")) renderPanel();
  }
  const later = new Map();  // part -> timer
  function scheduleLater(ms, part) {  // e.g. to end a highlight; one timer per part
    if (later.has(part)) return;
    later.set(part, setTimeout(() => { later.delete(part); schedule(part); }, ms));
  }

  // -- feed list ---------------------------------------------------------------------------
  async function pollFeeds() {
    try {
      const { feeds } = await getJSON("feeds?limit=10000");
      const now = performance.now();
      const seen = new Set();
      for (const f of feeds) {
        seen.add(f.feed);
        let e = st.feeds.get(f.feed);
        if (!e) {
          e = { feed: f.feed, seq: 0, participants: [], hot: -Infinity, li: null };
          st.feeds.set(f.feed, e);
          if (st.listed) e.hot = now;  // a new feed
        }
        if (f.seq > e.seq) {
          if (e.seq) e.hot = now;
          e.seq = f.seq;
        }
        e.participants = f.participants || [];
        if (f.feed.startsWith("agent/")) loadProfileLater(f.feed, f.seq);
      }
      for (const k of [...st.feeds.keys()]) if (!seen.has(k)) st.feeds.delete(k);
      st.listed = true;
      if (!st.current && feeds.length) {
        const first = feeds.find((f) => isDocFeed(f.feed)) || feeds[0];
        select(first.feed);
      }
      schedule("feeds");
    } catch (e) { /* relay restarting: the next poll tries again */ }
  }

  function feedLabel(feed) {
    if (feed.startsWith("agent/") && isKey(feed.slice(6))) {
      const p = st.names.get(feed.slice(6)) || P.agent(feed.slice(6));
      if (p) return p.name;
    }
    return P.label(feed, nameOf) || feed;
  }

  function renderFeeds() {
    const now = performance.now();
    const q = st.filter.toLowerCase();
    const groups = { doc: [], auction: [], task: [], agent: [], ledger: [], vouch: [], dm: [], other: [] };
    let hot = false;
    for (const e of st.feeds.values()) {
      const label = feedLabel(e.feed);
      if (q && !e.feed.toLowerCase().includes(q) && !label.toLowerCase().includes(q)) continue;
      if (!e.li) {
        e.li = el("li");
        e.li.dataset.feed = e.feed;
        e.li.title = e.feed;
        e.li.append(el("span", "fname"), el("span", "pp"), el("span", "seq"));
        e.li.onclick = () => { showOverview(false); select(e.feed); };
      }
      const [fname, pp, seq] = e.li.children;
      setText(fname, label);
      const keys = e.feed === st.current && st.ready ? [...st.presence] : e.participants;
      setText(pp, keys.length ? `${keys.length} ●` : "");
      const who = keys.slice(0, 30).map(nameOf).sort().join(", ") + (keys.length > 30 ? ", …" : "");
      if (pp.title !== who) pp.title = who;
      setText(seq, `#${e.seq}`);
      const isHot = now - e.hot < HOT_MS;
      hot ||= isHot;
      e.li.classList.toggle("hot", isHot);
      e.li.classList.toggle("active", e.feed === st.current);
      const ns = e.feed.slice(0, e.feed.indexOf("/"));
      (groups[ns] || groups.other).push(e.li);
    }
    groups.agent.sort((a, b) => a.firstChild.textContent.localeCompare(b.firstChild.textContent));
    for (const [name, lis] of Object.entries(groups)) {
      const ul = $("#feeds-" + name);
      const kids = ul.children;
      if (kids.length !== lis.length || lis.some((li, i) => kids[i] !== li)) ul.replaceChildren(...lis);
      ul.previousElementSibling.hidden = lis.length === 0;
    }
    if (hot) scheduleLater(HOT_MS / 2, "feeds");
  }

  // -- names: agent/<key> profiles ---------------------------------------------------------
  const profileQueue = [];
  let profileBusy = 0;
  function loadProfileLater(feed, seq) {
    if (!isKey(feed.slice(6)) || (st.profileSeq.get(feed) || 0) >= seq) return;
    st.profileSeq.set(feed, seq);
    profileQueue.push([feed, seq]);
    pumpProfiles();
  }
  function pumpProfiles() {
    while (profileBusy < PROFILE_FETCHES && profileQueue.length) {
      const [feed, seq] = profileQueue.shift();
      profileBusy++;
      loadProfile(feed, seq)
        .catch(() => st.profileSeq.delete(feed))  // try again on the next poll
        .finally(() => { profileBusy--; pumpProfiles(); });
    }
  }
  async function loadProfile(feed, seq) {
    const key = feed.slice(6);
    const { records } = await getJSON(`${feedUrl(feed)}/events?since=${Math.max(0, seq - 20)}&limit=20`);
    for (const rec of records.reverse()) {  // the newest profile the key itself signed
      const ev = rec.event;
      if (ev.kind !== "agent.profile" || ev.author !== key || !ev.body || typeof ev.body.name !== "string") continue;
      if (st.crypto === "ok" && !(await C.verifyEvent(ev)).ok) continue;
      const name = ev.body.name.trim().slice(0, 40) || short(key);
      const description = typeof ev.body.description === "string" ? ev.body.description.slice(0, 200) : "";
      const old = st.names.get(key);
      if (!old || old.name !== name || old.description !== description) {
        st.names.set(key, { name, description });
        schedule("feeds", "people", "timeline", "panel");
        renameAuthor(key);
      }
      return;
    }
  }

  // -- participants ------------------------------------------------------------------------
  const chips = new Map();  // key -> span
  function renderPeople() {
    const now = Date.now();
    const keys = [...st.presence].sort((a, b) => nameOf(a).localeCompare(nameOf(b)) || (a < b ? -1 : 1));
    const out = keys.map((k) => {
      let c = chips.get(k);
      if (!c) {
        c = el("span", "chip");
        c.dataset.key = k;
        c.style.setProperty("--c", colour(k));
        chips.set(k, c);
      }
      setText(c, nameOf(k));
      const p = st.names.get(k);
      c.title = k + (p && p.description ? ` — ${p.description}` : "");
      c.classList.toggle("typing", now - (st.activity.get(k) || 0) < ACTIVE_MS);
      return c;
    });
    for (const k of [...chips.keys()]) if (!st.presence.has(k)) chips.delete(k);
    const box = $("#participants");
    if (box.children.length !== out.length || out.some((c, i) => box.children[i] !== c)) box.replaceChildren(...out);
    setText($("#people-count"), st.current ? `${keys.length} participant${keys.length === 1 ? "" : "s"}` : "");
    const info = st.info && st.info.feed === st.current ? st.info : null;
    setText($("#feed-meta"), info ? `${info.policy} · owner ${info.owner ? nameOf(info.owner) : "?"}` : "");
    if ([...st.activity.values()].some((t) => now - t < ACTIVE_MS)) scheduleLater(1000, "people");
  }

  // -- the record timeline (virtualized, newest first) -------------------------------------
  function newTimeline(feed) {
    // recs[i] holds seq lo + i; every entry: {r: record, seq, sig: 0 pending | 1 | -1, why,
    // hash, chain: 0 pending | 1 linked | -1 broken | 2 unknown (previous record not held)}
    return { feed, lo: 1, recs: [], ready: false, todo: [], verifying: false, buffer: new Map(),
             filling: false, fillTo: 0, loadingOlder: false, shift: 0, selected: 0, head: 0, view: [0, 40] };
  }
  const hiOf = (T) => T.lo + T.recs.length - 1;
  const entry = (T, seq) => (seq >= T.lo && seq <= hiOf(T) ? T.recs[seq - T.lo] : undefined);
  const mkEntry = (r) => ({ r, seq: r.seq, sig: 0, why: "", hash: null, chain: 0, busy: false });

  function append(T, r) {
    if (!T.recs.length) T.lo = r.seq;
    const e = mkEntry(r);
    T.recs.push(e);
    T.todo.push(e);
    relink(T, e.seq);
    if (T.recs.length > KEEP) {
      const drop = T.recs.length - KEEP;
      T.recs.splice(0, drop);  // the oldest; their links were checked already
      T.lo += drop;
    }
    if ($("#tl").scrollTop > 0) T.shift++;  // keep the rows the reader is looking at in place
  }

  function relink(T, seq) {
    const e = entry(T, seq);
    if (!e) return;
    if (seq === 1) { e.chain = e.r.prev === C.GENESIS ? 1 : -1; return; }
    const p = entry(T, seq - 1);
    if (!p) e.chain = 2;
    else if (p.hash === null) e.chain = p.sig === 0 ? 0 : 2;
    else e.chain = e.r.prev === p.hash ? 1 : -1;
  }

  async function loadRecords(T, gen, since, limit) {
    const body = await getJSON(`${feedUrl(T.feed)}/events?since=${since}&limit=${limit}`);
    if (gen !== st.gen) return null;
    T.head = Math.max(T.head, body.seq);
    return body.records;
  }

  async function loadOlder(T) {
    if (T.loadingOlder || T.lo <= 1 || !T.recs.length) return;
    T.loadingOlder = true;
    const gen = st.gen;
    try {
      const since = Math.max(0, T.lo - 1 - PAGE);
      const recs = await loadRecords(T, gen, since, T.lo - 1 - since);
      if (!recs || !recs.length || recs[recs.length - 1].seq !== T.lo - 1) return;
      const entries = recs.map(mkEntry);
      const oldLo = T.lo;
      T.recs = entries.concat(T.recs);
      T.lo = recs[0].seq;
      for (const e of entries) T.todo.push(e);
      for (const e of entries) relink(T, e.seq);
      relink(T, oldLo);
      schedule("timeline");
      pumpVerify();
    } catch (e) { /* scrolled again later: try again */ } finally {
      T.loadingOlder = false;
    }
  }

  // Records arrive over the socket in order; a gap (a snapshot instead of a backlog, or a
  // reconnect) is filled over HTTP, holding later live records back until it is.
  function onRec(T, r) {
    if (r.seq <= hiOf(T) && T.recs.length) return;
    if (!T.filling && (r.seq === hiOf(T) + 1 || !T.recs.length)) {
      append(T, r);
      noteRecord(r);
      return;
    }
    T.buffer.set(r.seq, r);
    fillGap(T, r.seq - 1);
  }

  async function fillGap(T, to) {
    T.fillTo = Math.max(T.fillTo, to);
    if (T.filling) return;
    T.filling = true;
    const gen = st.gen;
    try {
      while (hiOf(T) < T.fillTo) {
        const recs = await loadRecords(T, gen, hiOf(T), PAGE);
        if (!recs) return;
        if (!recs.length) break;
        for (const r of recs) if (r.seq === hiOf(T) + 1) { append(T, r); noteRecord(r); }
      }
      while (T.buffer.size) {
        const next = T.buffer.get(hiOf(T) + 1);
        for (const s of [...T.buffer.keys()]) if (s <= hiOf(T)) T.buffer.delete(s);
        if (!next) break;
        T.buffer.delete(next.seq);
        append(T, next);
        noteRecord(next);
      }
    } catch (e) {
      setTimeout(() => { if (gen === st.gen) fillGap(T, T.fillTo); }, 1000);
    } finally {
      T.filling = false;
    }
  }

  function noteRecord(r) {  // a live record of the current feed
    st.activity.set(r.event.author, Date.now());
    const f = st.feeds.get(r.event.feed);
    if (f && r.seq > f.seq) { f.seq = r.seq; f.hot = performance.now(); }
    if (st.T) st.T.head = Math.max(st.T.head, r.seq);
    docChanged();
    schedule("timeline", "people", "feeds", "tt");
    pumpVerify();
  }

  // Verification runs in small batches, visible rows first, then newest first, yielding to the
  // event loop between batches: WebCrypto's Ed25519 runs on the main thread (about 50 us a
  // signature), so one long run would freeze the page. Results are rendered on the next frame.
  const yieldTask = typeof scheduler !== "undefined" && scheduler.yield ? () => scheduler.yield()
    : () => new Promise((resolve) => { const ch = new MessageChannel(); ch.port1.onmessage = resolve; ch.port2.postMessage(0); });

  async function pumpVerify() {
    const T = st.T;
    if (!T || T.verifying || st.crypto !== "ok") return;
    T.verifying = true;
    try {
      for (;;) {
        const batch = pickBatch(T, 24);
        if (!batch.length || T !== st.T) break;
        await Promise.all(batch.map(async (e) => {
          const v = await C.verifyRecord(e.r);
          e.sig = v.ok ? 1 : -1;
          e.why = v.reason;
          e.hash = v.hash;
          e.busy = false;
        }));
        for (const e of batch) { relink(T, e.seq); relink(T, e.seq + 1); }
        schedule("timeline");
        await yieldTask();
      }
    } finally {
      T.verifying = false;
    }
  }

  function pickBatch(T, n) {
    const out = [];
    const take = (e) => { if (e && e.sig === 0 && !e.busy && entry(T, e.seq) === e) { e.busy = true; out.push(e); } };
    const [first, last] = T.view;  // as last rendered (reading the layout here would force it)
    for (let i = first; i < last && out.length < n; i++) take(T.recs[T.recs.length - 1 - i]);
    while (out.length < n && T.todo.length) take(T.todo.pop());
    return out;
  }

  function visibleRows(T, top, height) {
    const first = Math.max(0, Math.floor(top / ROW) - 5);
    return [first, Math.min(T.recs.length, first + Math.ceil((height || 600) / ROW) + 10)];
  }

  const rowPool = [];
  function makeRow() {
    const row = el("div", "row");
    for (const cls of ["seq", "time", "author", "kind", "sig", "chain"]) row.append(el("span", cls));
    row.onclick = () => pickRecord(row._seq);
    return row;
  }
  const SIG = { 0: ["…", "pending", "not verified yet"], 1: ["✓", "ok", "author signature, event id and relay receipt verify"],
                [-1]: ["✗", "bad", ""] };
  const CHAIN = { 0: ["…", "pending", "waiting for the previous record's hash"], 1: ["✓", "ok", "prev is the hash of the previous record"],
                  [-1]: ["✗", "bad", "prev is NOT the hash of the previous record"], 2: ["?", "unknown", "previous record not loaded (scroll down)"] };

  function renderTimeline() {
    const T = st.T;
    const box = $("#tl");
    const n = T ? T.recs.length : 0;
    let top = box.scrollTop;  // layout reads first, then writes: no forced synchronous layout
    const height = box.clientHeight;
    $("#tl-spacer").style.height = n * ROW + "px";
    if (T && T.shift) {
      top += T.shift * ROW;
      box.scrollTop = top;
      T.shift = 0;
    }
    const [first, last] = T ? visibleRows(T, top, height) : [0, 0];
    if (T) T.view = [first, last];
    const rows = $("#tl-rows");
    rows.style.transform = `translateY(${first * ROW}px)`;
    while (rowPool.length < last - first) rows.append(rowPool[rowPool.push(makeRow()) - 1]);
    const noCrypto = st.crypto === "unavailable";
    for (let i = 0; i < rowPool.length; i++) {
      const row = rowPool[i];
      const idx = first + i;
      if (idx >= last) { row.hidden = true; continue; }
      const e = T.recs[n - 1 - idx];
      const ev = e.r.event;
      row.hidden = false;
      row._seq = e.seq;
      row.dataset.seq = e.seq;
      const [seq, time, author, kind, sig, chain] = row.children;
      setText(seq, String(e.seq));
      if (!e.time) e.time = clock(e.r.rtime);
      setText(time, e.time);
      if (row._rtime !== e.r.rtime) { row._rtime = e.r.rtime; time.title = new Date(e.r.rtime).toISOString(); }
      setText(author, nameOf(ev.author));
      author.title = ev.author;
      author.style.color = colour(ev.author);
      setText(kind, ev.kind);
      const [stext, scls, stitle] = noCrypto ? ["n/a", "unknown", "WebCrypto unavailable"] : SIG[e.sig];
      setText(sig, stext);
      sig.className = "sig " + scls;
      sig.title = e.sig === -1 ? e.why : stitle;
      const [ctext, ccls, ctitle] = CHAIN[e.chain];
      setText(chain, ctext);
      chain.className = "chain " + ccls;
      chain.title = ctitle;
      row.classList.toggle("selected", e.seq === T.selected);
      row.dataset.verified = e.sig === 1 && e.chain === 1 ? "yes" : e.sig === -1 || e.chain === -1 ? "no" : "pending";
    }
    if (T) {
      let bad = 0;
      let ok = 0;
      for (const e of T.recs) { if (e.sig === -1 || e.chain === -1) bad++; else if (e.sig === 1) ok++; }
      setText($("#tl-summary"), `${n} of ${T.head} loaded (seq ${n ? T.lo : 0}–${n ? hiOf(T) : 0}) · ${ok} verified`
        + (bad ? ` · ${bad} FAILED` : ""));
      $("#tl-summary").classList.toggle("bad", bad > 0);
      if (last >= n - 20 && T.lo > 1 && T.ready) loadOlder(T);
      pumpVerify();
    } else setText($("#tl-summary"), "");
  }

  function pickRecord(seq) {
    const T = st.T;
    const e = T && entry(T, seq);
    if (!e) return;
    T.selected = seq;
    const detail = $("#detail");
    detail.hidden = false;
    const text = JSON.stringify(e.r, null, 2);
    detail.textContent = (e.sig === -1 ? `✗ ${e.why}\n` : "") + (text.length > 20000 ? text.slice(0, 20000) + "\n…" : text);
    if (!$("#doc-panel").hidden) travel(seq);
    schedule("timeline");
  }

  // -- the document and time travel --------------------------------------------------------
  function showDoc(state, at, mode) {
    const pre = $("#doc");
    const text = state && typeof state.text === "string" ? state.text : JSON.stringify(state, null, 2);
    const tr = mode === "live" && typeof (state && state.text) === "string" ? st.authors : null;
    const runs = tr && tr.runsAt(at, text);
    if (runs) showRuns(pre, runs);
    else if (pre.dataset.authored === "yes" || pre.textContent !== text) {
      pre.textContent = text;
      pre.dataset.authored = "no";
      setText($("#doc-authors"), "");
    }
    pre.dataset.seq = String(at);
    pre.dataset.mode = mode;
    if (tr && !runs) {
      tr.catchUp(at).then((ok) => {
        if (ok && tr === st.authors && st.tt.live && pre.dataset.seq === String(at) && tr.runsAt(at, text)) {
          showDoc(state, at, mode);
        }
      });
    }
  }

  function renameAuthor(key) {  // a name arrived after the document was coloured: relabel its parts
    const name = nameOf(key);
    for (const e of document.querySelectorAll("#doc-authors .chip, #doc span.au")) {
      if (e.dataset.key === key) e.textContent = name;
      else if (e.dataset.author === key) e.title = name;
    }
  }

  function showRuns(pre, runs) {  // the text as spans, one per run of one author
    const spans = runs.map(([text, key]) => {
      const s = el("span", key ? "au" : "au unknown", text);
      if (key) {
        s.dataset.author = key;
        s.style.setProperty("--c", colour(key));
        s.title = nameOf(key);
      }
      return s;
    });
    pre.replaceChildren(...spans);
    pre.dataset.authored = "yes";
    const chars = new Map();
    for (const [text, key] of runs) if (key) chars.set(key, (chars.get(key) || 0) + text.length);
    const legend = $("#doc-authors");
    legend.replaceChildren(...(chars.size ? [el("span", "muted", "written by")] : []), ...[...chars.keys()].map((k) => {
      const c = el("span", "chip", nameOf(k));
      c.dataset.key = k;
      c.style.setProperty("--c", colour(k));
      c.title = `${k} · ${chars.get(k)} characters`;
      return c;
    }));
  }

  function docChanged() {  // a record arrived: refresh the text, at most every DOC_EVERY ms
    const d = st.doc;
    if (!d || ($("#doc-panel").hidden && $("#state-panel").hidden)) return;
    d.dirty = true;
    if (d.timer || d.inflight) return;
    d.timer = setTimeout(() => docFetch(d), Math.max(0, d.last + DOC_EVERY - performance.now()));
  }

  async function docFetch(d) {
    d.timer = 0;
    if (d !== st.doc || !st.tt.live) { d.dirty = false; return; }
    d.dirty = false;
    d.inflight = true;
    d.last = performance.now();
    try {
      const j = await getJSON(`${feedUrl(d.feed)}/state`);
      if (d !== st.doc || !st.tt.live) return;
      if (!$("#doc-panel").hidden) showDoc(j.state, j.at, "live");
      else if (st.panel) { st.panel.state = j.state; schedule("panel"); }
    } catch (e) { d.dirty = true; } finally {
      d.inflight = false;
      if (d.dirty && d === st.doc) docChanged();
    }
  }

  function headSeq() { return st.T ? Math.max(st.T.head, hiOf(st.T)) : 0; }

  function renderSlider() {
    const s = $("#tt");
    const head = headSeq();
    if (+s.max !== head) s.max = String(head);
    if (st.tt.live && +s.value !== head) s.value = String(head);
    const e = !st.tt.live && st.T && entry(st.T, st.tt.at);
    setText($("#tt-label"), st.tt.live ? `live · seq ${head}`
      : `seq ${st.tt.at} of ${head}` + (e ? ` · ${clock(e.r.rtime)} · ${nameOf(e.r.event.author)}` : ""));
    $("#tt-live").disabled = st.tt.live;
    $("#doc").classList.toggle("past", !st.tt.live);
  }

  function travel(at, reveal) {
    if (at >= headSeq()) { goLive(); return; }
    st.tt.live = false;
    st.tt.at = at;
    const T = st.T;
    if (T) {
      T.selected = at;
      const box = $("#tl");
      const y = (hiOf(T) - at) * ROW;  // the record's row, newest first
      if (reveal && entry(T, at) && (y < box.scrollTop || y + ROW > box.scrollTop + box.clientHeight)) {
        box.scrollTop = Math.max(0, y - box.clientHeight / 2);
      }
    }
    schedule("tt", "timeline");
    clearTimeout(st.tt.timer);
    st.tt.timer = setTimeout(() => fetchState(at), 60);  // a dragged slider asks once it rests
  }

  async function fetchState(at) {
    if (st.tt.ctl) st.tt.ctl.abort();
    const ctl = new AbortController();
    st.tt.ctl = ctl;
    const feed = st.current;
    try {
      const j = await getJSON(`${feedUrl(feed)}/state?at=${at}`, { signal: ctl.signal });
      if (feed === st.current && !st.tt.live && st.tt.at === at) showDoc(j.state, j.at, "past");
    } catch (e) {
      if (e.name !== "AbortError" && feed === st.current && !st.tt.live) showNote(`state at seq ${at}: ${e.message}`);
    }
  }

  function goLive() {
    st.tt.live = true;
    clearTimeout(st.tt.timer);
    if (st.tt.ctl) st.tt.ctl.abort();
    if (st.doc) { st.doc.last = 0; st.doc.dirty = true; docChanged(); }
    if (st.T) st.T.selected = 0;
    $("#tl").scrollTop = 0;  // back to the newest records
    schedule("tt", "timeline");
  }

  function showNote(text) {
    const n = $("#note");
    n.hidden = !text;
    n.textContent = text || "";
  }

  // -- coordination state panel and the Agents overview (web/panels.js) ---------------------
  function showPanel(state, info) {
    st.panel = info ? { state, info } : null;
    renderPanel();
  }
  function renderPanel() {
    const box = $("#state-panel");
    const p = st.panel;
    box.hidden = !(p && P.render(P.nsOf(p.info.feed), p.state, box, nameOf, { feed: p.info.feed, info: p.info }));
  }
  function showOverview(on) {
    st.overview = on;
    $("#view").hidden = on;
    $("#overview").hidden = !on;
    $("#agents-btn").classList.toggle("active", on);
    if (on) P.renderAgents($("#overview"), (feed) => { location.hash = feed; });
    const hash = on ? "@agents" : st.current;
    if (hash && location.hash.slice(1) !== hash) history.replaceState(null, "", "#" + hash);
  }
  P.onChange = () => schedule("feeds", "people", "timeline", "panel");

  // -- selecting a feed --------------------------------------------------------------------
  async function select(feed) {
    if (st.current === feed) return;
    if (st.current && st.ready) send({ t: "unsub", feed: st.current });
    st.current = feed;
    const gen = ++st.gen;
    if (!st.overview && location.hash.slice(1) !== feed) history.replaceState(null, "", "#" + feed);
    st.presence = new Set();
    st.activity = new Map();
    st.T = newTimeline(feed);
    st.tt = { live: true, at: 0, timer: 0, ctl: null };
    st.doc = { feed, timer: 0, inflight: false, dirty: false, last: 0 };
    st.authors = isDocFeed(feed) ? new A.Tracker(feed) : null;
    setText($("#feed-title"), feed);
    st.info = null;
    $("#detail").hidden = true;
    showNote("");
    $("#doc-panel").hidden = !isDocFeed(feed);
    showDoc({ text: "" }, 0, "live");
    showPanel(null, null);
    $("#tl").scrollTop = 0;
    schedule("feeds", "people", "timeline", "tt");
    let info;
    try {
      info = await getJSON(feedUrl(feed));
    } catch (e) {
      if (gen === st.gen) showNote(e.status === 404 ? `${feed} has no records yet` : `${feed}: ${e.message}`);
      return;
    }
    if (gen !== st.gen) return;
    st.info = info;
    schedule("people");
    if (info.policy === "members") {
      $("#doc-panel").hidden = true;
      showPanel(null, info);
      showNote("members-only feed: its records are read only over an authenticated WebSocket, and this viewer is anonymous");
      return;
    }
    const T = st.T;
    T.head = info.seq;
    if (info.state && typeof info.state.text === "string") {
      $("#doc-panel").hidden = false;
      showDoc(info.state, info.seq, "live");
    } else {
      $("#doc-panel").hidden = true;
      showPanel(info.state, info);
    }
    try {
      const recs = await loadRecords(T, gen, Math.max(0, info.seq - PAGE), PAGE);
      if (!recs) return;
      for (const r of recs) if (!T.recs.length || r.seq === hiOf(T) + 1) append(T, r);
      T.shift = 0;
    } catch (e) {
      showNote(`records of ${feed}: ${e.message}`);
    }
    T.ready = true;
    if (st.ready) send({ t: "sub", feed, since: T.recs.length ? hiOf(T) : 0 });
    schedule("timeline", "tt");
    pumpVerify();
  }

  // -- the socket --------------------------------------------------------------------------
  function send(frame) { if (st.ws && st.ws.readyState === 1) st.ws.send(JSON.stringify(frame)); }

  let backoff = 500;
  function connect() {
    const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
    st.ws = ws;
    ws.onmessage = (m) => {
      for (const line of String(m.data).split("\n")) {
        if (!line.trim()) continue;
        let f;
        try { f = JSON.parse(line); } catch (e) { continue; }
        onFrame(f);
      }
    };
    ws.onclose = () => {
      if (st.ws !== ws) return;
      st.ready = false;
      setStatus("reconnecting…", "");
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  function setStatus(text, cls) {
    const s = $("#status");
    setText(s, text);
    s.className = "status " + cls;
  }

  function onFrame(f) {
    if (f.t === "challenge") {
      st.ready = true;
      backoff = 500;
      st.relayKey = f.relay;
      setText($("#relay"), "relay " + short(f.relay));
      $("#relay").title = f.relay;
      setStatus("live", "live");
      const T = st.T;
      if (T && T.ready) {
        st.presence = new Set();
        send({ t: "sub", feed: T.feed, since: T.recs.length ? hiOf(T) : 0 });
      } else {
        send({ t: "ping" });  // a first message: the relay closes connections that send none (4408)
      }
      return;
    }
    const T = st.T;
    if (!T || f.feed !== T.feed) return;  // frames of a feed we just left
    if (f.t === "rec") onRec(T, f.rec);
    else if (f.t === "synced") {
      if (f.seq > hiOf(T)) fillGap(T, f.seq);
      T.head = Math.max(T.head, f.seq);
      schedule("tt", "timeline");
    } else if (f.t === "presence") {
      if (f.op === "list") st.presence = new Set(f.keys);
      else if (f.op === "join") f.keys.forEach((k) => st.presence.add(k));
      else if (f.op === "leave") f.keys.forEach((k) => st.presence.delete(k));
      schedule("people", "feeds");
    } else if (f.t === "unsubbed" && f.reason) showNote(`the relay ended the subscription: ${f.reason}`);
  }

  // -- start -------------------------------------------------------------------------------
  async function checkCrypto() {
    // RFC 8032 section 7.1 TEST 1: proves WebCrypto Ed25519 works here
    const ok = C.available && await C.verifySig(
      "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
      new Uint8Array(0));
    st.crypto = ok ? "ok" : "unavailable";
    if (!ok) {
      const w = $("#crypto");
      w.hidden = false;
      w.textContent = C.available ? "this browser has no WebCrypto Ed25519: signatures are not checked"
        : "signatures are not checked: WebCrypto needs https or localhost";
    }
    schedule("timeline");
    pumpVerify();
  }

  $("#filter").addEventListener("input", (e) => { st.filter = e.target.value.trim(); schedule("feeds"); });
  $("#tl").addEventListener("scroll", () => schedule("timeline"), { passive: true });
  $("#tt").addEventListener("input", (e) => travel(+e.target.value, true));
  $("#tt-live").addEventListener("click", goLive);
  window.addEventListener("resize", () => schedule("timeline"));
  $("#agents-btn").addEventListener("click", () => showOverview(true));
  function route() {
    const f = decodeURIComponent(location.hash.slice(1));
    if (f === "@agents") showOverview(true);
    else if (f) { showOverview(false); select(f); }
  }
  window.addEventListener("hashchange", route);

  checkCrypto();
  connect();
  route();
  pollFeeds();
  P.loadDirectory(true);
  setInterval(() => { if (!document.hidden) { pollFeeds(); P.loadDirectory(); } }, FEEDS_EVERY);
})();

// Colony viewer: plain JS over the relay's HTTP API and native WebSocket protocol (no build step).
"use strict";
const $ = (sel) => document.querySelector(sel);
const MAX_ROWS = 200;
let ws = null, current = null, lastSeq = 0, names = {};

function short(key) { return key ? key.slice(0, 8) + "…" : "?"; }
function colour(key) {
  let h = 0;
  for (const c of key) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 55% 45%)`;
}

async function refreshFeeds() {
  try {
    const res = await fetch("feeds");
    const { feeds } = await res.json();
    const ul = $("#feeds");
    ul.replaceChildren(...feeds.map((f) => {
      const li = document.createElement("li");
      li.dataset.feed = f.feed;
      li.className = f.feed === current ? "active" : "";
      li.innerHTML = `<span></span><span class="seq"></span>`;
      li.firstChild.textContent = f.feed;
      li.lastChild.textContent = `#${f.seq}` + (f.participants.length ? ` · ${f.participants.length}👤` : "");
      li.onclick = () => select(f.feed);
      return li;
    }));
    if (!current && feeds.length) select((feeds.find((f) => f.feed.startsWith("doc/")) || feeds[0]).feed);
  } catch (e) { /* relay restarting: try again on the next tick */ }
}

let docTimer = null;
function refreshDoc() {
  if (docTimer) return;
  docTimer = setTimeout(async () => {
    docTimer = null;
    if (!current) return;
    const res = await fetch(`feeds/${current}`);
    if (!res.ok) return;
    const info = await res.json();
    const text = info.state && typeof info.state.text === "string" ? info.state.text : JSON.stringify(info.state, null, 2);
    $("#doc").textContent = text;
  }, 50);
}

function setParticipants(keys) {
  $("#participants").replaceChildren(...[...keys].sort().map((k) => {
    const s = document.createElement("span");
    s.textContent = names[k] || short(k);
    s.style.background = colour(k);
    s.title = k;
    return s;
  }));
}

function addRow(rec) {
  const tr = document.createElement("tr");
  const ev = rec.event;
  for (const [cls, val] of [["", rec.seq], ["", new Date(rec.rtime).toLocaleTimeString()],
                             ["author", names[ev.author] || short(ev.author)], ["", ev.kind]]) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = val;
    tr.append(td);
  }
  const body = $("#timeline tbody");
  body.prepend(tr);
  while (body.children.length > MAX_ROWS) body.lastChild.remove();
}

let present = new Set();
function onFrame(f) {
  if (f.feed !== current) return;
  if (f.t === "rec") { lastSeq = f.rec.seq; addRow(f.rec); refreshDoc(); }
  else if (f.t === "snapshot") { lastSeq = f.snap.seq; refreshDoc(); }
  else if (f.t === "synced") { $("#status").textContent = `live · seq ${f.seq}`; $("#status").className = "status live"; refreshDoc(); }
  else if (f.t === "presence") {
    if (f.op === "list") present = new Set(f.keys);
    else if (f.op === "join") f.keys.forEach((k) => present.add(k));
    else f.keys.forEach((k) => present.delete(k));
    setParticipants(present);
  }
}

async function select(feed) {
  if (ws && current) ws.send(JSON.stringify({ t: "unsub", feed: current }));
  current = feed; lastSeq = 0; present = new Set();
  $("#feed-title").textContent = feed;
  $("#timeline tbody").replaceChildren();
  $("#doc").textContent = "";
  document.querySelectorAll("#feeds li").forEach((li) => li.classList.toggle("active", li.dataset.feed === feed));
  // history for the timeline: the last records over HTTP, then live over the socket
  const head = await (await fetch(`feeds/${feed}`)).json().catch(() => ({ seq: 0 }));
  const since = Math.max(0, (head.seq || 0) - 50);
  const res = await fetch(`feeds/${feed}/events?since=${since}&limit=50`);
  if (res.ok) (await res.json()).records.forEach(addRow);
  if (ws && ws.readyState === 1) ws.send(JSON.stringify({ t: "sub", feed, since: 0 }));
  refreshDoc();
}

function connect() {
  const url = location.origin.replace(/^http/, "ws") + "/ws";
  ws = new WebSocket(url);
  ws.onmessage = (m) => {
    for (const line of m.data.split("\n")) {
      if (!line) continue;
      const f = JSON.parse(line);
      if (f.t === "challenge") { $("#relay").textContent = "relay " + short(f.relay); if (current) ws.send(JSON.stringify({ t: "sub", feed: current, since: 0 })); }
      else onFrame(f);
    }
  };
  ws.onclose = () => { $("#status").textContent = "reconnecting…"; $("#status").className = "status"; setTimeout(connect, 1000); };
}

async function loadNames() {
  // agents may publish a profile in agent/<key> feeds ({kind: "agent.profile", body: {name}})
  try {
    const { feeds } = await (await fetch("feeds?prefix=agent/")).json();
    for (const f of feeds) {
      const r = await fetch(`feeds/${f.feed}/events?since=${Math.max(0, f.seq - 1)}&limit=1`);
      const recs = (await r.json()).records;
      if (recs.length && recs[0].event.body && recs[0].event.body.name) names[recs[0].event.author] = recs[0].event.body.name;
    }
  } catch (e) { /* names are a nicety */ }
}

loadNames().then(refreshFeeds);
connect();
setInterval(refreshFeeds, 2000);
setInterval(loadNames, 10000);

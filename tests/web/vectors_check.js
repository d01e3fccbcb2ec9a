// Checks web/colony.js against tests/vectors/*.json. Runs in Node (node vectors_check.js) and in
// Chromium (test_viewer.py injects this file and calls colonyVectorChecks on the viewer page).
// Returns {passed, failures: [names]}.
"use strict";

async function colonyVectorChecks(C, V) {
  const failures = [];
  let passed = 0;
  const check = (name, ok) => { if (ok) passed++; else failures.push(name); };
  const hex = (bytes) => C.bytesToHex(bytes);
  const utf8 = (s) => new TextEncoder().encode(s);
  const clone = (o) => JSON.parse(JSON.stringify(o));

  // canonical JSON
  for (const c of V.canonical.valid) {
    let out = null;
    try { out = hex(C.canonicalBytes(C.parseStrict(c.input_json))); } catch (e) { out = "threw " + e.message; }
    check("canonical/" + c.name, out === c.output_hex);
  }
  for (const c of V.canonical.rejected) {
    let refused = false;
    try { C.canonical(C.parseStrict(c.input_json)); } catch (e) { refused = e instanceof C.CanonicalError; }
    check("canonical-refused/" + c.name, refused);
  }
  // feed ids
  for (const f of V.ids.feeds.valid) check("feed-valid/" + f, C.validFeed(f));
  for (const f of V.ids.feeds.invalid) check("feed-invalid/" + JSON.stringify(f.feed), !C.validFeed(f.feed));
  // a plain signature
  const alice = V.keys.keys.find((k) => k.name === "alice").public;
  const sig = V.keys.signature;
  check("keys/signature", await C.verifySig(alice, sig.signature, C.hexToBytes(sig.message_hex)));
  check("keys/signature-other-message", !(await C.verifySig(alice, sig.signature, utf8("colonx"))));
  // events
  for (const c of V.events.events) {
    check("event-bytes/" + c.name, hex(C.eventSigningBytes(c.event)) === c.signing_bytes_hex);
    check("event-id/" + c.name, (await C.sha256Hex(C.eventSigningBytes(c.event))) === c.id);
    check("event-verifies/" + c.name, (await C.verifyEvent(c.event)).ok);
  }
  for (const c of V.invalid_events.cases) {
    let ev;
    try { ev = C.parseStrict(c.event_json); } catch (e) { check("invalid-event/" + c.name, c.error !== ""); continue; }
    const ok = (await C.verifyEvent(ev)).ok;
    check("invalid-event/" + c.name, ok === (c.error === ""));
  }
  // records and the chain
  let prevHash = V.records.genesis;
  for (const c of V.records.chain) {
    check("receipt-bytes/" + c.seq, hex(C.receiptBytes(c.record)) === c.receipt_bytes_hex);
    const r = await C.verifyRecord(c.record);
    check("record-verifies/" + c.seq, r.ok && r.hash === c.hash);
    check("record-links/" + c.seq, C.linksTo(c.record, prevHash));
    prevHash = c.hash;
  }
  // tampering: any change to a signed byte makes the record fail, a wrong prev breaks the chain
  const rec2 = V.records.chain[1].record;
  const tamper = {
    body: (r) => { r.event.body = { update: "AQEBAAQBBHRleHQFaGVsbG8A" }; },
    author_ts: (r) => { r.event.ts += 1; },
    event_sig: (r) => { r.event.sig = (r.event.sig[0] === "0" ? "1" : "0") + r.event.sig.slice(1); },
    rtime: (r) => { r.rtime += 1; },
    seq: (r) => { r.seq += 1; },
    rsig: (r) => { r.rsig = (r.rsig[0] === "0" ? "1" : "0") + r.rsig.slice(1); },
    relay: (r) => { r.relay = alice; },
  };
  for (const [name, f] of Object.entries(tamper)) {
    const r = clone(rec2);
    f(r);
    check("tampered-record/" + name, !(await C.verifyRecord(r)).ok);
  }
  const relinked = clone(rec2);
  relinked.prev = V.records.genesis;
  check("tampered-chain/prev", !C.linksTo(relinked, V.records.chain[0].hash));
  // strict Ed25519: every "refuse" signature is refused, the "accept" one verifies
  for (const c of (V.ed25519 ? V.ed25519.cases : [])) {
    const ok = await C.verifySig(c.public, c.signature, C.hexToBytes(c.message_hex));
    check("ed25519/" + c.name, ok === (c.expected === "accept"));
  }
  return { passed, failures };
}

if (typeof module !== "undefined" && module.exports && require.main === module) {
  // node tests/web/vectors_check.js: load the vectors and web/colony.js, print the result
  const path = require("path");
  const fs = require("fs");
  const root = path.resolve(__dirname, "..", "..");
  const C = require(path.join(root, "web", "colony.js"));
  const load = (n) => JSON.parse(fs.readFileSync(path.join(root, "tests", "vectors", n + ".json"), "utf8"));
  const V = {};
  for (const n of ["canonical", "ids", "keys", "events", "invalid_events", "records", "ed25519"]) V[n] = load(n);
  colonyVectorChecks(C, V).then((r) => {
    console.log(JSON.stringify(r));
    process.exit(r.failures.length ? 1 : 0);
  });
}

// Colony protocol checks in plain JS (browser and Node >= 20), written from docs/protocol.md:
// canonical JSON (section 3), event signing bytes and ids (5), record receipts, hashes and the
// hash chain (6). Ed25519 and SHA-256 come from WebCrypto (crypto.subtle), which browsers offer
// only in a secure context (https, or http on localhost).
(function (root) {
  "use strict";

  const EVENT_DOMAIN = "colony/event/v1\n";
  const RECORD_DOMAIN = "colony/record/v1\n";
  const GENESIS = "0".repeat(64);
  const MAX_DEPTH = 32;
  const HEX64 = /^[0-9a-f]{64}$/;
  const HEX128 = /^[0-9a-f]{128}$/;
  const subtle = (root.crypto && root.crypto.subtle) || null;
  const utf8 = new TextEncoder();

  class CanonicalError extends Error {}

  // -- canonical JSON (section 3) ----------------------------------------------------------
  const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;
  const SHORT = { 0x08: "\\b", 0x09: "\\t", 0x0a: "\\n", 0x0c: "\\f", 0x0d: "\\r", 0x22: '\\"', 0x5c: "\\\\" };

  function encodeString(s) {
    if (!NEEDS_ESCAPE.test(s)) return '"' + s + '"';
    let out = '"';
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (SHORT[c] !== undefined) out += SHORT[c];
      else if (c < 0x20) out += "\\u00" + (c < 0x10 ? "0" : "") + c.toString(16);
      else if (c >= 0xd800 && c <= 0xdbff) {
        const d = s.charCodeAt(i + 1);  // NaN past the end
        if (!(d >= 0xdc00 && d <= 0xdfff)) throw new CanonicalError("lone surrogate in a string");
        out += s[i] + s[i + 1];
        i++;
      } else if (c >= 0xdc00 && c <= 0xdfff) throw new CanonicalError("lone surrogate in a string");
      else out += s[i];
    }
    return out + '"';
  }

  function encode(v, depth) {
    if (depth > MAX_DEPTH) throw new CanonicalError("nested deeper than " + MAX_DEPTH);
    if (v === null) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new CanonicalError("not an integer in the safe range: " + v);
      return String(v);  // String(-0) is "0"
    }
    if (typeof v === "string") return encodeString(v);
    if (Array.isArray(v)) return "[" + v.map((x) => encode(x, depth + 1)).join(",") + "]";
    if (typeof v === "object") {
      // default sort compares UTF-16 code units, shorter first on a common prefix: section 3.2
      const keys = Object.keys(v).sort();
      let out = "{";
      for (let i = 0; i < keys.length; i++) {
        if (i) out += ",";
        out += encodeString(keys[i]) + ":" + encode(v[keys[i]], depth + 1);
      }
      return out + "}";
    }
    throw new CanonicalError("not a JSON value: " + typeof v);
  }

  /** Canonical JSON text of a value (throws CanonicalError outside the value domain). */
  function canonical(value) { return encode(value, 0); }

  /** Canonical JSON as UTF-8 bytes. */
  function canonicalBytes(value) { return utf8.encode(canonical(value)); }

  // -- strict parsing (section 3.3): JSON.parse takes 1.0, 1e3 and duplicate keys -----------
  function parseStrict(text) {
    let i = 0;
    const n = text.length;
    const fail = (why) => { throw new CanonicalError(why + " at " + i); };
    const ws = () => { while (i < n && " \t\n\r".includes(text[i])) i++; };
    function value(depth) {
      if (depth > 512) fail("too deep");
      ws();
      const c = text[i];
      if (c === "{") {
        i++;
        const obj = {};
        const seen = new Set();
        ws();
        if (text[i] === "}") { i++; return obj; }
        for (;;) {
          ws();
          if (text[i] !== '"') fail("expected a member name");
          const k = string();
          if (seen.has(k)) fail("duplicate member name");
          seen.add(k);
          ws();
          if (text[i++] !== ":") fail("expected ':'");
          Object.defineProperty(obj, k, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
          ws();
          if (text[i] === ",") { i++; continue; }
          if (text[i] === "}") { i++; return obj; }
          fail("expected ',' or '}'");
        }
      }
      if (c === "[") {
        i++;
        const arr = [];
        ws();
        if (text[i] === "]") { i++; return arr; }
        for (;;) {
          arr.push(value(depth + 1));
          ws();
          if (text[i] === ",") { i++; continue; }
          if (text[i] === "]") { i++; return arr; }
          fail("expected ',' or ']'");
        }
      }
      if (c === '"') return string();
      for (const [lit, v] of [["null", null], ["true", true], ["false", false]]) {
        if (text.startsWith(lit, i)) { i += lit.length; return v; }
      }
      const m = /^-?(0|[1-9][0-9]*)/.exec(text.slice(i, i + 400));
      if (!m) fail("unexpected character");
      i += m[0].length;
      if (i < n && ".eE".includes(text[i])) fail("floats are not allowed");
      const num = Number(m[0]);
      return num === 0 ? 0 : num;  // -0 is the integer 0; range is checked when encoding
    }
    function string() {
      i++;  // opening quote
      let out = "";
      for (;;) {
        if (i >= n) fail("unterminated string");
        const c = text[i++];
        if (c === '"') return out;
        if (c < " ") fail("control character in a string");
        if (c !== "\\") { out += c; continue; }
        const e = text[i++];
        const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
        if (simple !== undefined) { out += simple; continue; }
        if (e !== "u" || !/^[0-9a-fA-F]{4}$/.test(text.slice(i, i + 4))) fail("bad escape");
        out += String.fromCharCode(parseInt(text.slice(i, i + 4), 16));
        i += 4;
      }
    }
    const v = value(0);
    ws();
    if (i !== n) fail("trailing characters");
    return v;
  }

  // -- bytes -------------------------------------------------------------------------------
  function hexToBytes(hex) {
    const out = new Uint8Array(hex.length >> 1);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
    return out;
  }

  const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
  function bytesToHex(buf) {
    const b = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < b.length; i++) s += HEX[b[i]];
    return s;
  }

  function concat(prefix, body) {
    const p = utf8.encode(prefix);
    const out = new Uint8Array(p.length + body.length);
    out.set(p);
    out.set(body, p.length);
    return out;
  }

  async function sha256Hex(bytes) { return bytesToHex(await subtle.digest("SHA-256", bytes)); }

  // imported public keys, by hex (a feed has few authors and one relay)
  const keyCache = new Map();
  function importKey(hex) {
    let k = keyCache.get(hex);
    if (!k) {
      if (keyCache.size > 4096) keyCache.clear();
      k = subtle.importKey("raw", hexToBytes(hex), { name: "Ed25519" }, false, ["verify"]);
      keyCache.set(hex, k);
    }
    return k;
  }

  // Strict Ed25519 (docs/protocol.md 5.3): WebCrypto checks the cofactorless equation bytewise;
  // S < L, a canonical key and no small-order key or R are checked here (not every engine does).
  const ED_P = (1n << 255n) - 19n;
  const ED_L = (1n << 252n) + 27742317777372353535851937790883648493n;
  const SMALL_ORDER_Y = new Set([0n, 1n, ED_P - 1n, ED_P, ED_P + 1n,
    0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826n,
    0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n]);
  function leInt(hex) {  // little-endian hex -> BigInt
    let be = "";
    for (let i = hex.length - 2; i >= 0; i -= 2) be += hex.slice(i, i + 2);
    return BigInt("0x" + be);
  }
  function strictEncodings(pubHex, sigHex) {
    const mask = (1n << 255n) - 1n;
    const yKey = leInt(pubHex) & mask, yR = leInt(sigHex.slice(0, 64)) & mask;
    return leInt(sigHex.slice(64)) < ED_L && yKey < ED_P && !SMALL_ORDER_Y.has(yKey) && !SMALL_ORDER_Y.has(yR);
  }

  /** Strict Ed25519 (RFC 8032, with the rules of docs/protocol.md 5.3) verification; false for
   *  anything that does not verify. */
  async function verifySig(pubHex, sigHex, bytes) {
    if (!HEX64.test(pubHex) || !HEX128.test(sigHex) || !strictEncodings(pubHex, sigHex)) return false;
    try {
      return await subtle.verify({ name: "Ed25519" }, await importKey(pubHex), hexToBytes(sigHex), bytes);
    } catch (e) {
      return false;  // e.g. a public key that is not a curve point
    }
  }

  // -- events and records (sections 5 and 6) ---------------------------------------------
  function eventSigningBytes(ev) {
    const signed = { author: ev.author, body: ev.body, ctx: ev.ctx, feed: ev.feed, kind: ev.kind, ts: ev.ts };
    return concat(EVENT_DOMAIN, canonicalBytes(signed));
  }

  function receiptBytes(rec) {
    const r = { event: rec.event.id, feed: rec.event.feed, prev: rec.prev, relay: rec.relay, rtime: rec.rtime, seq: rec.seq };
    return concat(RECORD_DOMAIN, canonicalBytes(r));
  }

  const EVENT_FIELDS = ["author", "body", "ctx", "feed", "id", "kind", "sig", "ts"];
  const RECORD_FIELDS = ["event", "prev", "relay", "rsig", "rtime", "seq"];
  const sameFields = (o, fields) => o !== null && typeof o === "object" && !Array.isArray(o)
    && Object.keys(o).sort().join() === fields.join();

  const FEED_RE = /^[a-z][a-z0-9_-]{0,31}\/[A-Za-z0-9._~:@+=-][A-Za-z0-9._~:@+=\/-]{0,199}$/;
  const KIND_RE = /^[a-z][a-z0-9_.-]{0,63}$/;
  const RESERVED_LAST = new Set(["events", "state", "stream"]);

  /** Feed id rules of section 4.1. */
  function validFeed(feed) {
    if (typeof feed !== "string" || !FEED_RE.test(feed)) return false;
    const segs = feed.split("/").slice(1);
    return segs.every((x) => x !== "" && x !== "." && x !== "..") && !RESERVED_LAST.has(segs[segs.length - 1]);
  }

  const isCount = (v) => Number.isSafeInteger(v) && v >= 0;

  /** The shape checks of section 5.3 steps 1-2: "" when fine, else why not. */
  function checkEvent(ev) {
    if (!sameFields(ev, EVENT_FIELDS)) return "wrong fields";
    if (!validFeed(ev.feed)) return "bad feed id";
    if (typeof ev.kind !== "string" || !KIND_RE.test(ev.kind)) return "bad kind";
    if (!HEX64.test(ev.author) || !HEX64.test(ev.id) || !HEX128.test(ev.sig)) return "bad hex";
    if (!isCount(ev.ts) || !isCount(ev.ctx)) return "bad ts or ctx";
    return "";
  }

  /** {ok, reason}: the event is well-formed, its id is SHA-256 of its signing bytes and its
   *  author signed them (section 5.3). */
  async function verifyEvent(ev) {
    const bad = checkEvent(ev);
    if (bad) return { ok: false, reason: "invalid: " + bad };
    let bytes;
    try {
      bytes = eventSigningBytes(ev);
    } catch (e) {
      return { ok: false, reason: "invalid: " + e.message };
    }
    if ((await sha256Hex(bytes)) !== ev.id) return { ok: false, reason: "id is not the SHA-256 of the signing bytes" };
    if (!(await verifySig(ev.author, ev.sig, bytes))) return { ok: false, reason: "author signature does not verify" };
    return { ok: true, reason: "" };
  }

  /** {ok, hash, reason}: the event verifies and the relay's receipt signature verifies;
   *  hash is the record's hash (SHA-256 of the receipt bytes) whenever the receipt can be built. */
  async function verifyRecord(rec) {
    if (!sameFields(rec, RECORD_FIELDS)) return { ok: false, hash: null, reason: "invalid: wrong fields" };
    let rb;
    try {
      rb = receiptBytes(rec);
    } catch (e) {
      return { ok: false, hash: null, reason: "invalid: " + e.message };
    }
    const [hash, ev, receipt] = await Promise.all([
      sha256Hex(rb), verifyEvent(rec.event), verifySig(rec.relay, rec.rsig, rb)]);
    if (!ev.ok) return { ok: false, hash, reason: ev.reason };
    if (!Number.isSafeInteger(rec.seq) || rec.seq < 1 || !isCount(rec.rtime) || !HEX64.test(rec.prev)
        || !HEX64.test(rec.relay) || !HEX128.test(rec.rsig)) return { ok: false, hash, reason: "invalid: receipt fields" };
    if (!receipt) return { ok: false, hash, reason: "relay receipt signature does not verify" };
    return { ok: true, hash, reason: "" };
  }

  /** Whether rec links to the record before it (whose hash is prevHash; GENESIS for seq 1). */
  function linksTo(rec, prevHash) { return rec.prev === (rec.seq === 1 ? GENESIS : prevHash); }

  const api = {
    EVENT_DOMAIN, RECORD_DOMAIN, GENESIS, CanonicalError, available: !!subtle,
    canonical, canonicalBytes, parseStrict, hexToBytes, bytesToHex, sha256Hex, verifySig,
    validFeed, checkEvent, eventSigningBytes, receiptBytes, verifyEvent, verifyRecord, linksTo,
  };
  root.Colony = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof globalThis !== "undefined" ? globalThis : this);

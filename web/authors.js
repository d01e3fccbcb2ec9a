// Who wrote which part of a document (window.ColonyAuthors), for the viewer's per-agent colours.
//
// The viewer merges the doc feed's own records with Yjs (web/yjs.min.js, the global Y), in seq
// order, exactly as the relay folds them. Every Yjs item carries the client id of the document
// copy that created it; a client id belongs to the key that signed the first doc.update record
// carrying it (read from the update's header with Y.parseUpdateMeta, no full decode). A client id
// that a later record by another key reuses is marked disputed (no colour). Walking the merged
// Y.Text gives runs [text, key]. The runs are shown only while the viewer's merged text equals the
// relay's text at the same seq (GET /feeds/{feed}/state), so a colour never decorates a different
// text. Authorship is what the records' authors say; the timeline shows whether they verify.
//
// Bounds: a feed past MAX records, or one whose first records were compacted into a snapshot
// (nothing says who wrote the snapshot's items), is shown without colours; records are fetched
// PAGE at a time and merged in slices of SLICE with a yield between, so a long history never
// blocks the page.
"use strict";
(() => {
  const MAX = 5000;    // records merged per document
  const PAGE = 1000;   // records per HTTP page (the relay's maximum)
  const SLICE = 200;   // records merged between two yields to the browser
  const DISPUTED = "";
  const ROOT = "text"; // collab.namespaces.doc.TEXT_ROOT

  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  const pause = () => new Promise((r) => setTimeout(r, 0));

  class Tracker {
    constructor(feed) {
      this.feed = feed;
      this.ydoc = new Y.Doc();
      this.text = this.ydoc.getText(ROOT);
      this.owner = new Map();  // Yjs client id -> author key ("" when disputed)
      this.seq = 0;            // records merged so far: 1..seq
      this.broken = "";        // why colours are off for this feed, once they are
      this.busy = null;        // the catch-up under way
      this.cache = null;       // [seq, runs] of the last walk
    }

    merge(rec) {
      const ev = rec.event;
      this.seq = rec.seq;
      if (ev.kind !== "doc.update" || !ev.body || typeof ev.body.update !== "string") return;
      let u;
      try {
        u = bytes(ev.body.update);
        for (const client of Y.parseUpdateMeta(u).to.keys()) {
          const had = this.owner.get(client);
          if (had === undefined) this.owner.set(client, ev.author);
          else if (had !== ev.author) this.owner.set(client, DISPUTED);
        }
        Y.applyUpdate(this.ydoc, u);
      } catch (e) { /* the relay refuses malformed updates; one it kept but Yjs can't read is left out */ }
    }

    // Merge the feed's records up to at least `at` (fetching them); true once seq >= at.
    catchUp(at) {
      if (this.broken || this.seq >= at) return Promise.resolve(!this.broken && this.seq >= at);
      if (!this.busy) {
        this.busy = this.load(at).catch(() => {}).finally(() => { this.busy = null; });
      }
      return this.busy.then(() => (this.seq >= at ? true : this.catchUp(at)));
    }

    async load(at) {
      while (!this.broken && this.seq < at) {
        if (at > MAX) { this.broken = `more than ${MAX} records`; return; }
        const res = await fetch(`feeds/${this.feed}/events?since=${this.seq}&limit=${PAGE}`);
        if (!res.ok) { this.broken = `records: HTTP ${res.status}`; return; }
        const { records } = await res.json();
        if (!records.length) return;
        for (let i = 0; i < records.length; i++) {
          const r = records[i];
          if (r.seq !== this.seq + 1) { this.broken = `record ${this.seq + 1} is missing (compacted?)`; return; }
          this.merge(r);
          if (i % SLICE === SLICE - 1) await pause();
        }
      }
    }

    // [[text, key], ...] of the document at `at`, if the merged copy is at `at` and reads `text`.
    runsAt(at, text) {
      if (this.broken || this.seq !== at) return null;
      if (this.cache && this.cache[0] === at) return this.cache[1];
      if (this.text.toString() !== text) return null;
      const runs = [];
      for (let item = this.text._start; item; item = item.right) {
        if (item.deleted || !(item.content instanceof Y.ContentString)) continue;
        const key = this.owner.get(item.id.client) || DISPUTED;
        const last = runs[runs.length - 1];
        if (last && last[1] === key) last[0] += item.content.str;
        else runs.push([item.content.str, key]);
      }
      this.cache = [at, runs];
      return runs;
    }
  }

  window.ColonyAuthors = { Tracker, MAX };
})();

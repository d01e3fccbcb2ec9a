// Unmodified Yjs clients for tests/interop/test_node_yjs.py. Talks JSON lines: events and
// replies on stdout, commands on stdin.
//
//   node client.mjs roundtrip
//       prints {"update": <base64 Yjs update>, "json": <the doc as JSON>} for a document with
//       text (formatting, deletions), maps, arrays and XML full of non-ASCII text; then reads
//       {"update": <base64>} (the same document re-encoded by pycrdt), applies it to a fresh
//       Y.Doc and prints {"json": ...} of that doc; then reads {"update": <base64>} once more
//       (an incremental update made by pycrdt), applies it to the first doc, prints {"json": ...}.
//
//   node client.mjs live <ws base url, e.g. ws://127.0.0.1:8765/yjs> <room> [token]
//       a y-websocket WebsocketProvider on that room (token -> the `token` URL parameter).
//       events: {"event": "status"|"sync"|"close"|"warn"|"text"|"awareness", ...}
//       commands: {"id", "cmd": "insert", "text", "index"?} | {"id", "cmd": "delete", "index", "length"}
//                 | {"id", "cmd": "state"} | {"id", "cmd": "user", "name"} | {"id", "cmd": "quit"}
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const b64 = (bytes) => Buffer.from(bytes).toString('base64')
const unb64 = (text) => new Uint8Array(Buffer.from(text, 'base64'))
const lines = readline.createInterface({ input: process.stdin })
const nextLine = (() => {
  const queue = []
  const waiting = []
  lines.on('line', (line) => {
    if (!line.trim()) return
    const msg = JSON.parse(line)
    if (waiting.length) waiting.shift()(msg)
    else queue.push(msg)
  })
  return () => queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiting.push(resolve))
})()

const docJSON = (doc) => ({
  text: doc.getText('text').toString(),
  delta: doc.getText('text').toDelta(),
  map: doc.getMap('map').toJSON(),
  arr: doc.getArray('arr').toJSON(),
  xml: doc.getXmlFragment('xml').toString()
})

async function roundtrip () {
  const doc = new Y.Doc()
  const text = doc.getText('text')
  text.insert(0, 'Grüße, 世界! 🌍🚀 — naïve café; Ωmega')
  text.format(0, 5, { bold: true })
  text.insert(text.length, ' ∑∞ ✓', { italic: true, color: '#ff0000' })
  text.delete(text.toString().indexOf('naïve '), 6) // a delete set (indexes in UTF-16 units, after the emoji)
  const map = doc.getMap('map')
  map.set('name', 'Zoë Ångström')
  map.set('emoji', '🎉👩‍💻')
  map.set('ключ', 'значение')
  map.set('n', 42)
  map.set('neg', -7)
  map.set('flag', true)
  map.set('nothing', null)
  map.set('plain', { a: [1, 2, { b: 'ü', c: ['二', '三'] }] })
  const sub = new Y.Map()
  map.set('sub', sub)
  sub.set('深い', 'ネスト')
  sub.set('count', 3)
  map.set('gone', 'x')
  map.delete('gone')
  const arr = doc.getArray('arr')
  arr.push(['α', 1, true, null, { x: 'ÿ' }, [1, '二']])
  const inner = new Y.Array()
  arr.push([inner])
  inner.push(['深', '🐙'])
  arr.delete(1, 1)
  const xml = doc.getXmlFragment('xml')
  const h = new Y.XmlElement('h1')
  h.insert(0, [new Y.XmlText('標題 🏷')])
  const p = new Y.XmlElement('p')
  p.setAttribute('lang', 'fr')
  p.setAttribute('title', 'été')
  const t = new Y.XmlText()
  t.insert(0, 'Ça va? 🙂')
  p.insert(0, [t])
  xml.insert(0, [h, p])
  emit({ update: b64(Y.encodeStateAsUpdate(doc)), json: docJSON(doc) })

  const reencoded = await nextLine()
  const fresh = new Y.Doc()
  Y.applyUpdate(fresh, unb64(reencoded.update))
  emit({ json: docJSON(fresh) })

  const incremental = await nextLine()
  Y.applyUpdate(doc, unb64(incremental.update))
  emit({ json: docJSON(doc) })
}

async function live (base, room, token) {
  // y-websocket reports permission-denied (auth message) with console.warn: capture it
  console.warn = (...args) => emit({ event: 'warn', message: args.map(String).join(' ') })
  console.error = (...args) => emit({ event: 'error', message: args.map(String).join(' ') })
  const doc = new Y.Doc()
  const text = doc.getText('text')
  const provider = new WebsocketProvider(base, room, doc, {
    WebSocketPolyfill: WebSocket,
    params: token ? { token } : {},
    disableBc: true,
    maxBackoffTime: 300
  })
  provider.awareness.setLocalStateField('user', { name: 'node', color: '#00aa00' })
  provider.on('status', (e) => emit({ event: 'status', status: e.status }))
  provider.on('sync', (synced) => emit({ event: 'sync', synced, text: text.toString() }))
  provider.on('connection-close', (e) => emit({ event: 'close', code: e ? e.code : null, reason: e ? String(e.reason) : null }))
  text.observe(() => emit({ event: 'text', text: text.toString() }))
  const states = () => Array.from(provider.awareness.getStates().entries()).map(([client, state]) => ({ client, state }))
  provider.awareness.on('change', () => emit({ event: 'awareness', states: states() }))
  emit({ event: 'started', client: doc.clientID })
  for (;;) {
    const msg = await nextLine()
    const reply = { id: msg.id, ok: true }
    if (msg.cmd === 'insert') {
      text.insert(msg.index ?? text.length, msg.text)
    } else if (msg.cmd === 'delete') {
      text.delete(msg.index, msg.length)
    } else if (msg.cmd === 'user') {
      provider.awareness.setLocalStateField('user', { name: msg.name, color: '#00aa00' })
    } else if (msg.cmd === 'state') {
      Object.assign(reply, { text: text.toString(), synced: provider.synced, json: docJSON(doc), awareness: states() })
    } else if (msg.cmd === 'quit') {
      provider.destroy()
      emit(reply)
      process.exit(0)
    } else {
      Object.assign(reply, { ok: false, error: `unknown command ${msg.cmd}` })
    }
    emit(reply)
  }
}

const [mode, ...args] = process.argv.slice(2)
if (mode === 'roundtrip') {
  roundtrip().then(() => process.exit(0), (err) => { emit({ error: String(err && err.stack) }); process.exit(1) })
} else if (mode === 'live') {
  live(...args).catch((err) => { emit({ error: String(err && err.stack) }); process.exit(1) })
} else {
  process.stderr.write('usage: node client.mjs roundtrip | live <base> <room> [token]\n')
  process.exit(2)
}

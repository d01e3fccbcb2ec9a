#!/usr/bin/env node
// Hocuspocus for benchmarks/bench_yjs.py: @hocuspocus/server's Server with its defaults (in-memory
// documents, no extensions, no onAuthenticate hook: every connection may read and write; updates
// of one event-loop turn merged into one broadcast, flushDelay 0), on HOST:PORT given as
// arguments (PORT 0 = a free port). Only two settings differ from the defaults: `quiet` (no
// start screen) and `timeout` (a connection that sends nothing for 60 s is closed by default;
// the benchmark's subscribers only read, so it is raised to 10 min).
// Clients speak Hocuspocus's framing (each message starts with the document name, then
// HocuspocusProvider's message types; see benchmarks/harness/load.py).
// Prints "hocuspocus listening on http://HOST:PORT" once it accepts connections.
import { Server } from '@hocuspocus/server'

const host = process.argv[2] || '127.0.0.1'
const port = parseInt(process.argv[3] || '0')
const server = new Server({ address: host, port, quiet: true, timeout: 600_000 })
await server.listen()
const a = server.httpServer.address()
console.log(`hocuspocus listening on http://${a.address}:${a.port}`)

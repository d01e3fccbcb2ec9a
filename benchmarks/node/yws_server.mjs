#!/usr/bin/env node
// The reference y-websocket server for benchmarks/bench_yjs.py: @y/websocket-server's
// setupWSConnection (in-memory documents, no persistence, no callback), served exactly like
// its bundled src/server.js, but on HOST:PORT given as arguments (PORT 0 = a free port).
// Prints "node-y-websocket listening on http://HOST:PORT" once it accepts connections.
import http from 'http'
import { WebSocketServer } from 'ws'
import { setupWSConnection } from '@y/websocket-server/utils'

const host = process.argv[2] || '127.0.0.1'
const port = parseInt(process.argv[3] || '0')
const wss = new WebSocketServer({ noServer: true })
const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' })
  res.end('okay')
})
wss.on('connection', setupWSConnection)
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, ws => wss.emit('connection', ws, req))
})
server.listen(port, host, () => {
  const a = server.address()
  console.log(`node-y-websocket listening on http://${a.address}:${a.port}`)
})
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))

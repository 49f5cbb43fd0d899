// Restarts seen by real y-websocket providers, for `scripts/bench --scenarios storm rolling`
// (a benchmark, not a test).
//
//   node ystorm.mjs '{"url": "ws://127.0.0.1:PORT", "token": JWT or null, "docs": 100,
//                     "clients": 5, "docBytes": 50000, "probeEveryMs": 20}'
//
// 1. `docs` documents, `clients` providers each (y-websocket 3, real reconnect back-off);
//    the first provider of every document writes `docBytes` characters in 1 KB inserts,
//    and every provider waits for the whole text. Prints {"phase":"ready"}.
// 2. The driver restarts the server (SIGTERM and a fresh process on the same port, or
//    gunicorn's HUP), then writes one JSON line on stdin: {"actionAt": epoch ms,
//    "listenAt": epoch ms the new process listened, or null} (with "stdin": false, a test:
//    nothing is read, and step 3 waits for "expectClosed" providers to have been closed
//    and synced again). Meanwhile, from "ready" until
//    the end, a prober opens a fresh connection every `probeEveryMs` ms (a new user) and
//    counts those whose handshake failed or that got no sync step 2 within 5 s.
// 3. Waits until every provider the restart closed has synced again (or 30 s), then
//    checks every document: all its providers hold the same text of `docBytes`
//    characters ("lost" counts providers that do not). Prints the report: per provider the
//    close code, ms from its close to its next sync, the bytes it received on the new
//    socket until synced; the last sync after the action and after the listen; probes.

import { createInterface } from 'node:readline'
import { WebSocket, WebsocketProvider, Y } from './lib.mjs'

const spec = JSON.parse(process.argv[2] ?? '{}')
const DOCS = spec.docs ?? 100
const CLIENTS = spec.clients ?? 5
const DOC_BYTES = spec.docBytes ?? 50000
const PROBE_EVERY = spec.probeEveryMs ?? 20
process.setMaxListeners(0)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const waitFor = async (predicate, ms) => {
  const deadline = Date.now() + ms
  while (!predicate()) {
    if (Date.now() > deadline) return false
    await sleep(10)
  }
  return true
}
const protocols = spec.token ? ['access_token', spec.token] : undefined

const clients = []
const makeClient = (doc, index) => {
  const c = { doc, index, ydoc: new Y.Doc(), closes: [], syncs: [], opens: 0, bytes: 0, bytesAtOpen: [] }
  class CountingSocket extends WebSocket {
    constructor (url) {
      super(url, protocols, { handshakeTimeout: 5000, perMessageDeflate: false })
      this.on('open', () => { c.opens += 1; c.bytesAtOpen.push(c.bytes) })
      this.on('message', (data) => { c.bytes += data.byteLength ?? data.length })
      this.on('close', (code) => c.closes.push({ code, at: Date.now() }))
    }
  }
  c.provider = new WebsocketProvider(spec.url, `storm-${doc}`, c.ydoc, {
    WebSocketPolyfill: CountingSocket, disableBc: true
  })
  c.provider.awareness.setLocalStateField('user', `u${doc}-${index}`)
  c.provider.on('sync', (synced) => { if (synced) c.syncs.push({ at: Date.now(), bytes: c.bytes }) })
  clients.push(c)
  return c
}

for (let d = 0; d < DOCS; d++) {
  for (let i = 0; i < CLIENTS; i++) makeClient(d, i)
}
if (!await waitFor(() => clients.every((c) => c.syncs.length), 60000)) {
  emit({ error: 'not every provider synced at the start' })
  process.exit(1)
}
const chunk = 'x'.repeat(1000)
for (const c of clients.filter((c) => c.index === 0)) {
  const text = c.ydoc.getText('t')
  if (text.length === 0) for (let n = 0; n < DOC_BYTES / 1000; n++) text.insert(text.length, chunk)
}
if (!await waitFor(() => clients.every((c) => c.ydoc.getText('t').length === DOC_BYTES), 60000)) {
  emit({ error: 'the documents did not converge before the restart' })
  process.exit(1)
}
await sleep(500) // the last echoes: every update durable
const expected = new Map(clients.filter((c) => c.index === 0).map((c) => [c.doc, c.ydoc.getText('t').toString()]))
const syncsBefore = new Map(clients.map((c) => [c, c.syncs.length]))
const closesBefore = new Map(clients.map((c) => [c, c.closes.length]))

// The prober: a new user every PROBE_EVERY ms, until the end.
const probes = { tried: 0, failed: 0, errors: {} }
let probing = true
const probe = () => new Promise((resolve) => {
  const ws = new WebSocket(`${spec.url}/storm-${probes.tried % DOCS}`, protocols, { handshakeTimeout: 5000, perMessageDeflate: false })
  probes.tried += 1
  let done = false
  const finish = (error) => {
    if (done) return
    done = true
    clearTimeout(timer)
    if (error) { probes.failed += 1; probes.errors[error] = (probes.errors[error] || 0) + 1 }
    ws.terminate()
    resolve()
  }
  const timer = setTimeout(() => finish('no step 2 within 5 s'), 5000)
  ws.on('open', () => ws.send(Uint8Array.from([0, 0, 1, 0])))
  ws.on('message', (data) => { if (data[0] === 0 && data[1] === 1) finish(null) })
  ws.on('error', (e) => finish(e.code || e.message))
  ws.on('close', (code) => finish(`closed ${code}`))
})
const prober = (async () => {
  const running = new Set()
  while (probing) {
    const p = probe()
    running.add(p)
    p.then(() => running.delete(p))
    await sleep(PROBE_EVERY)
  }
  await Promise.all(running)
})()

emit({ phase: 'ready' })
let action = { actionAt: null, listenAt: null }
if (spec.stdin !== false) {
  const lines = createInterface({ input: process.stdin })
  action = JSON.parse((await lines[Symbol.asyncIterator]().next()).value)
}
await sleep(200) // a restart that closes nobody (a no-op) still ends
const closed = () => clients.filter((c) => c.closes.length > closesBefore.get(c))
const resynced = (c) => c.syncs.length > syncsBefore.get(c) && c.syncs.at(-1).at >= c.closes[closesBefore.get(c)].at
const expectClosed = spec.expectClosed ?? 1
await waitFor(() => closed().every(resynced) && closed().length >= expectClosed, 30000)
await sleep(300)
probing = false
await prober

const hit = closed()
const resync = hit.filter(resynced).map((c) => {
  const close = c.closes[closesBefore.get(c)]
  const sync = c.syncs.find((s) => s.at >= close.at)
  return { code: close.code, ms: sync.at - close.at, at: sync.at, bytes: sync.bytes - c.bytesAtOpen.at(-1) }
})
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : null
}
const codes = {}
for (const c of hit) {
  const code = c.closes[closesBefore.get(c)].code
  codes[code] = (codes[code] || 0) + 1
}
const lastSync = resync.length ? Math.max(...resync.map((r) => r.at)) : null
const lost = clients.filter((c) => c.ydoc.getText('t').toString() !== expected.get(c.doc)).length
const report = {
  providers: clients.length,
  closed: hit.length,
  closeCodes: codes,
  notResynced: hit.length - resync.length,
  resyncMs: { p50: quantile(resync.map((r) => r.ms), 0.5), p99: quantile(resync.map((r) => r.ms), 0.99), max: quantile(resync.map((r) => r.ms), 1) },
  bytesAfterReconnect: { p50: quantile(resync.map((r) => r.bytes), 0.5), max: quantile(resync.map((r) => r.bytes), 1) },
  lastSyncAfterActionMs: lastSync === null || action.actionAt == null ? null : lastSync - action.actionAt,
  lastSyncAfterListenMs: lastSync === null || action.listenAt == null ? null : lastSync - action.listenAt,
  lost,
  probes
}
for (const c of clients) c.provider.destroy()
emit(report)
setTimeout(() => process.exit(0), 200)

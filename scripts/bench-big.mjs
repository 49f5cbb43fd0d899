#!/usr/bin/env node
// bench-big: how much one big Yjs update delays everyone else's small ones.
//
//   node scripts/bench-big.mjs --url ws://127.0.0.1:PORT [--token JWT] [--size BYTES]
//        [--clients 50] [--writers 5] [--rate 20] [--before 4] [--after 5] [--workers 1]
//        [--json OUT.json]
//
// Run by `scripts/bench --scenarios big` from the ybench copy's directory (its node_modules
// give yjs, ws, y-protocols, lib0), with the same load for every server. The load is ybench's
// `room`: one document, `clients` clients speaking the y-websocket protocol (sync step 1/2),
// `writers` of them sending real Y.Text inserts of ~100 bytes at `rate`/s each. Every small
// update carries a marker `~w<writer>:<seq>:<send time µs>~`; receivers do not apply updates,
// they scan for markers and record (send time, latency). After `before` seconds one extra
// client sends ONE real Yjs update of `size` bytes (a Y.Text insert) into the same document;
// `after` seconds later the writers stop. Reported: latency of the small deliveries by the
// send time of the small update, relative to the big send T: "before" [T-before+1, T-0.5 s),
// "around" [T-0.5, T+0.5 s), "after" [T+0.5, T+after), one line per second, and when the big
// update reached each receiver. Awareness is left out (ybench's room renews it every 15 s).
// Limits: receivers share `workers` threads with each other (a receiver thread busy with 50
// copies of the big message delays its own measurement too, the same for every server).

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import net from 'node:net'
import { randomBytes } from 'node:crypto'

// Packages come from the working directory (the ybench copy), not from beside this file.
const require = createRequire(pathToFileURL(process.cwd() + '/'))
const WebSocket = require('ws')
const Y = require('yjs')
const encoding = require('lib0/encoding')
const decoding = require('lib0/decoding')
const syncProtocol = require('y-protocols/sync')

const MSG_SYNC = 0
const BIG = 64 * 1024 // a received message this long is the big one (small ones are ~150 B)
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000 // ms, same clock in all threads

function parseArgs (argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) out[argv[i].slice(2)] = argv[i + 1]?.startsWith('--') ? 'true' : argv[++i]
  }
  return out
}

function frame (payload) {
  // A client frame (FIN, binary) masked with the all-zero key: XOR is then a no-op, so
  // the small clients spend nothing on masking (servers must accept any key).
  const n = payload.length
  const head = n < 126 ? Buffer.from([0x82, 0x80 | n]) : Buffer.from([0x82, 0x80 | 126, n >> 8, n & 255])
  return Buffer.concat([head, Buffer.alloc(4), payload])
}

function connectRaw (cfg, wid, onUpdate) {
  // One y-websocket client on a bare TCP socket: a minimal RFC 6455 client, so that a big
  // message costs the receiving thread one pass over the bytes, not ws's buffering (which
  // took ~2.5 ms per MB per client, i.e. it measured the load client rather than the server).
  // Answers sync step 1 with its own (unapplied) state; answers pings.
  return new Promise((resolve, reject) => {
    const doc = new Y.Doc()
    const u = new URL(cfg.url.replace(/\/+$/, '') + '/' + cfg.doc)
    const sock = net.connect(Number(u.port), u.hostname)
    sock.setNoDelay(true)
    const c = { sock, doc, wid, text: doc.getText('t'), seq: 0, synced: false, last: null }
    c.send = (payload) => sock.write(frame(payload))
    doc.on('update', (x) => { c.last = x })
    let buf = Buffer.alloc(0); let upgraded = false
    let big = 0 // bytes of a big frame's payload still to skip
    const onFrame = (op, p) => {
      if (op === 0x9) { sock.write(Buffer.concat([Buffer.from([0x8a, 0x80 | p.length]), Buffer.alloc(4), p])); return }
      if (op !== 0x2) return
      if (p[0] === MSG_SYNC && p[1] === syncProtocol.messageYjsUpdate) return onUpdate(c, p)
      if (p[0] !== MSG_SYNC) return // awareness: not tracked
      const dec = decoding.createDecoder(p)
      decoding.readVarUint(dec)
      const st = decoding.readVarUint(dec)
      if (st === syncProtocol.messageYjsSyncStep1) {
        const e = encoding.createEncoder()
        encoding.writeVarUint(e, MSG_SYNC)
        syncProtocol.writeSyncStep2(e, doc, decoding.readVarUint8Array(dec))
        c.send(encoding.toUint8Array(e))
      } else if (st === syncProtocol.messageYjsSyncStep2 && !c.synced) {
        c.synced = true
        resolve(c)
      }
    }
    sock.on('data', (chunk) => {
      if (big) { // inside a big frame: count, do not copy
        if (chunk.length < big) { big -= chunk.length; return }
        chunk = chunk.subarray(big); big = 0
        onUpdate(c, null)
      }
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk
      if (!upgraded) {
        const i = buf.indexOf('\r\n\r\n')
        if (i < 0) return
        if (!buf.toString('latin1', 0, 12).includes('101')) { reject(new Error(buf.toString('latin1', 0, i))); return }
        upgraded = true; buf = buf.subarray(i + 4)
        const e = encoding.createEncoder()
        encoding.writeVarUint(e, MSG_SYNC)
        syncProtocol.writeSyncStep1(e, doc)
        c.send(encoding.toUint8Array(e))
      }
      while (buf.length >= 2) {
        const op = buf[0] & 0x0f; let len = buf[1] & 0x7f; let at = 2
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4 }
        if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10 }
        if (len >= BIG) { // the big message: skip its payload as it streams in
          if (buf.length - at >= len) { buf = buf.subarray(at + len); onUpdate(c, null); continue }
          big = len - (buf.length - at); buf = Buffer.alloc(0); return
        }
        if (buf.length < at + len) return
        onFrame(op, buf.subarray(at, at + len))
        buf = buf.subarray(at + len)
      }
    })
    sock.on('error', reject)
    sock.on('close', () => { if (!c.closing) console.error('[bench-big] client closed') })
    const proto = cfg.token ? `Sec-WebSocket-Protocol: access_token, ${cfg.token}\r\n` : ''
    sock.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${proto}\r\n`)
  })
}

function connectWs (cfg, onUpdate) {
  // The big sender: the ws library, as a browser would send it (real masking).
  return new Promise((resolve, reject) => {
    const doc = new Y.Doc()
    const url = cfg.url.replace(/\/+$/, '') + '/' + cfg.doc
    const protocols = cfg.token ? ['access_token', cfg.token] : undefined
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false })
    const c = { ws, doc, wid: -2, text: doc.getText('t'), last: null, close: () => ws.terminate() }
    c.send = (payload) => ws.send(payload)
    doc.on('update', (x) => { c.last = x })
    ws.on('open', () => {
      const e = encoding.createEncoder()
      encoding.writeVarUint(e, MSG_SYNC)
      syncProtocol.writeSyncStep1(e, doc)
      ws.send(encoding.toUint8Array(e))
      resolve(c)
    })
    ws.on('error', reject)
  })
}

function send (c, update) {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_SYNC)
  syncProtocol.writeUpdate(e, update)
  c.send(encoding.toUint8Array(e))
}

if (!isMainThread) {
  const cfg = workerData
  const clients = []
  const sendT = []; const lat = []; const bigAt = []
  let dups = 0
  // The receiver thread's own stalls (event-loop gaps over 5 ms): they delay the measured
  // latency without being the server's doing.
  const gaps = []
  let tick = now()
  const lag = setInterval(() => { const t = now(); if (t - tick > 5) gaps.push([tick, t - tick]); tick = t }, 1)
  const MARK = Buffer.from('~w')
  const onUpdate = (c, buf) => {
    const t = now()
    if (buf === null) { bigAt.push(t); return }
    let i = buf.indexOf(MARK, 2)
    while (i !== -1) {
      const end = buf.indexOf(126, i + 2) // '~'
      const [wid, , us] = buf.toString('latin1', i + 2, end).split(':').map(Number)
      if (wid === c.wid) dups++ // own echo: not a delivery to another client
      else { sendT.push(us / 1000); lat.push(t - us / 1000) }
      i = buf.indexOf(MARK, end + 1)
    }
  }
  let timer = null
  parentPort.on('message', async (m) => {
    if (m.type === 'connect') {
      for (const wid of cfg.wids) {
        clients.push(wid === -2 ? await connectWs(cfg, onUpdate) : await connectRaw(cfg, wid, onUpdate))
      }
      parentPort.postMessage({ type: 'connected' })
    } else if (m.type === 'write') {
      const writers = clients.filter((c) => c.wid >= 0)
      const interval = 1000 / cfg.rate
      const t0 = now()
      for (const c of writers) c.nextAt = t0 + interval * c.wid / cfg.writers // staggered
      let sent = 0
      timer = setInterval(() => {
        const t = now()
        for (const c of writers) {
          while (c.nextAt <= t) {
            const marker = `~w${c.wid}:${c.seq++}:${Math.round(now() * 1000)}~`
            c.text.insert(c.text.length, marker + 'x'.repeat(Math.max(0, 100 - marker.length)))
            send(c, c.last)
            sent++
            c.nextAt += interval
          }
        }
        if (t >= t0 + m.seconds * 1000) {
          clearInterval(timer)
          parentPort.postMessage({ type: 'written', sent })
        }
      }, 2)
    } else if (m.type === 'big') {
      const c = clients[0]
      c.text.insert(0, 'y'.repeat(cfg.size)) // one real Yjs update of ~size bytes
      const update = c.last
      const t = now()
      send(c, update)
      parentPort.postMessage({ type: 'bigSent', t, bytes: update.length })
    } else if (m.type === 'collect') {
      clearInterval(lag)
      for (const c of clients) { c.closing = true; c.close ? c.close() : c.sock.destroy() }
      parentPort.postMessage({ type: 'collected', sendT, lat, bigAt, dups, gaps })
    }
  })
} else {
  const a = parseArgs(process.argv.slice(2))
  const n = (k, d) => (a[k] === undefined ? d : Number(a[k]))
  const P = {
    url: a.url, token: a.token, doc: a.doc || 'big-' + process.pid, size: n('size', 1 << 20),
    clients: n('clients', 50), writers: n('writers', 5), rate: n('rate', 20),
    before: n('before', 4), after: n('after', 5), workers: n('workers', 1)
  }
  if (!P.url) { console.error('usage: bench-big.mjs --url ws://HOST:PORT [--token JWT] [--size BYTES]'); process.exit(2) }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
  const spawn = (wids, extra = {}) => {
    const w = new Worker(new URL(import.meta.url), { workerData: { ...P, ...extra, wids } })
    w.on('error', (e) => { console.error(e); process.exit(1) })
    return w
  }
  const ask = (w, msg, reply) => new Promise((resolve) => {
    const on = (m) => { if (m.type === reply) { w.off('message', on); resolve(m) } }
    w.on('message', on)
    w.postMessage(msg)
  })
  // client i is writer i for i < writers, else a pure receiver (wid -1); round-robin threads
  const receivers = Array.from({ length: P.workers }, (_, k) => {
    const wids = []
    for (let i = k; i < P.clients; i += P.workers) wids.push(i < P.writers ? i : -1)
    return spawn(wids)
  })
  const bigClient = spawn([-2]) // its own thread: building and masking the big update
  for (const w of receivers) await ask(w, { type: 'connect' }, 'connected')
  await ask(bigClient, { type: 'connect' }, 'connected')
  await sleep(1000)
  const seconds = P.before + P.after
  const written = Promise.all(receivers.map((w) => ask(w, { type: 'write', seconds }, 'written')))
  await sleep(P.before * 1000)
  const big = await ask(bigClient, { type: 'big' }, 'bigSent')
  const sent = (await written).reduce((s, m) => s + m.sent, 0)
  await sleep(2000) // drain
  const parts = await Promise.all(receivers.map((w) => ask(w, { type: 'collect' }, 'collected')))
  await ask(bigClient, { type: 'collect' }, 'collected')
  const T = big.t
  const rows = parts.flatMap((p) => p.sendT.map((s, i) => [s - T, p.lat[i]]))
  const stats = (lo, hi) => {
    const xs = rows.filter(([s]) => s >= lo && s < hi).map(([, l]) => l).sort((x, y) => x - y)
    const q = (p) => xs.length ? Math.round(xs[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)] * 100) / 100 : null
    return { n: xs.length, p50: q(0.5), p99: q(0.99), max: q(1) }
  }
  const bigAt = parts.flatMap((p) => p.bigAt.map((t) => t - T)).sort((x, y) => x - y)
  const report = {
    params: P, bigBytes: big.bytes, bigSentAtMs: T, sent, // T: CLOCK_MONOTONIC ms, like Python's time.monotonic()
    expected: sent * (P.clients - 1), received: rows.length,
    before: stats(-(P.before - 1) * 1000, -500),
    around: stats(-500, 500),
    after: stats(500, P.after * 1000),
    perSecond: Array.from({ length: P.after + 2 }, (_, i) => ({ from: i - 2, ...stats((i - 2) * 1000, (i - 1) * 1000) })),
    clientGapsMs: parts.flatMap((p) => p.gaps).filter(([t]) => t >= T - 1000).map(([t, d]) => [Math.round(t - T), Math.round(d)]),
    bigDelivered: { n: bigAt.length, first: Math.round(bigAt[0]), last: Math.round(bigAt[bigAt.length - 1]) }
  }
  const lost = report.expected - report.received
  report.summary = {
    beforeP99: report.before.p99, aroundP99: report.around.p99, aroundMax: report.around.max,
    afterP99: report.after.p99, afterMax: report.after.max, lost, bigLastMs: report.bigDelivered.last
  }
  if (a.json) writeFileSync(a.json, JSON.stringify(report, null, 2))
  console.log(JSON.stringify({ size: P.size, before: report.before, around: report.around, after: report.after, lost, bigDelivered: report.bigDelivered }))
  for (const w of [...receivers, bigClient]) await w.terminate()
}

// Opening connections, for `scripts/bench --scenarios open` (a benchmark, not a test):
// N fresh connections over D documents, each with its own token (a line of --tokens; none
// for the reference server), C connecting at a time, the first connection of every
// document first (like ybench's opener-first). Each is timed from connect start to its
// `open` (the 101) and to its first sync step 2 (the handshake checks, the join and the
// answer to its step 1: what a user waits for). All stay open until the last one is
// synced, then close. Output: one JSON object.
//
//   node yopen.mjs --url ws://127.0.0.1:PORT [--tokens FILE] [--connections 2000]
//                  [--docs 100] [--concurrency 64] [--json OUT]
import { readFileSync, writeFileSync } from 'node:fs'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const N = Number(args.connections || 2000)
const D = Number(args.docs || 100)
const C = Number(args.concurrency || 64)
const tokens = args.tokens ? readFileSync(args.tokens, 'utf8').split('\n').filter(Boolean) : null
if (tokens && tokens.length < N) throw new Error(`need ${N} tokens, got ${tokens.length}`)

const step1 = (() => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint8Array(e, Y.encodeStateVector(new Y.Doc()))
  return encoding.toUint8Array(e)
})()

const sockets = []
const connect = (i) => new Promise((resolve) => {
  const url = args.url.replace(/\/+$/, '') + '/open-' + (i % D)
  const protocols = tokens ? ['access_token', tokens[i]] : undefined
  const t0 = performance.now()
  const r = { openMs: null, step2Ms: null, error: null }
  let ws
  try {
    ws = new WebSocket(url, protocols, { perMessageDeflate: false, handshakeTimeout: 30000 })
  } catch (e) {
    r.error = e.message
    resolve(r)
    return
  }
  sockets.push(ws)
  ws.binaryType = 'nodebuffer'
  ws.on('open', () => {
    r.openMs = performance.now() - t0
    ws.send(step1)
  })
  ws.on('message', (buf) => {
    const d = decoding.createDecoder(buf)
    if (r.step2Ms === null && decoding.readVarUint(d) === 0 && decoding.readVarUint(d) === 1) {
      r.step2Ms = performance.now() - t0
      resolve(r)
    }
  })
  ws.on('error', (e) => { r.error = r.error || e.message; resolve(r) })
  ws.on('close', (code) => { r.error = r.error || `closed ${code}`; resolve(r) })
})

const quantile = (xs, q) => {
  const s = xs.filter((x) => x !== null).sort((a, b) => a - b)
  return s.length ? Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))] * 100) / 100 : null
}

const results = new Array(N)
const run = async (order) => {
  let next = 0
  const worker = async () => {
    while (next < order.length) {
      const i = order[next++]
      results[i] = await connect(i)
    }
  }
  await Promise.all(Array.from({ length: C }, worker))
}
const t0 = performance.now()
const openers = Array.from({ length: Math.min(D, N) }, (_, i) => i)
await run(openers)
await run(Array.from({ length: N - openers.length }, (_, i) => i + openers.length))
const totalMs = Math.round(performance.now() - t0)
const failed = results.filter((r) => r.step2Ms === null)
const errors = {}
for (const r of failed) errors[r.error] = (errors[r.error] || 0) + 1
const opens = results.map((r) => r.openMs)
const step2s = results.map((r) => r.step2Ms)
const report = {
  connections: N,
  docs: D,
  concurrency: C,
  ownTokens: !!tokens,
  totalMs,
  failed: failed.length,
  errors,
  openMs: { p50: quantile(opens, 0.5), p99: quantile(opens, 0.99), max: quantile(opens, 1) },
  step2Ms: { p50: quantile(step2s, 0.5), p99: quantile(step2s, 0.99), max: quantile(step2s, 1) }
}
for (const ws of sockets) ws.terminate()
const out = JSON.stringify(report)
if (args.json) writeFileSync(args.json, out)
console.log(out)
setTimeout(() => process.exit(0), 100)

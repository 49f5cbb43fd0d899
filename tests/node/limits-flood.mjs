// A handshake flood from one (X-Forwarded-For) IP, for tests/test_limits.py and the
// benchmark in docs: raw WebSocket upgrades over `net`, `concurrency` at a time, each
// reading the server's close frame and hanging up. Optionally, once `probeAfter`
// handshakes have been answered, a real y-websocket provider from another IP opens a
// document and sends one edit, and we record whether it synced and saw its edit
// confirmed while the flood was still running.
//
// argv[2]: JSON {host, port, count, concurrency, xff, path?, probe?: {url, doc, token,
// xff}, probeAfter?, timeout?}. Prints one JSON line: {codes: {code: n}, errors, elapsedMs,
// perSecond, probe: {synced, confirmed, answeredAtSync, answeredAtConfirm} | null}.

import net from 'net'
import crypto from 'crypto'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const spec = JSON.parse(process.argv[2])
const { host = '127.0.0.1', port, count, concurrency = 50, xff, path = '/flood' } = spec
const codes = {}
let errors = 0
let answered = 0
let started = 0
const probe = spec.probe ? { synced: false, confirmed: false } : null
let probeStarted = false

const hardTimeout = setTimeout(() => {
  console.log(JSON.stringify({ error: 'timeout', codes, errors, answered, probe }))
  process.exit(3)
}, spec.timeout ?? 60000)

function handshake () {
  return new Promise((resolve) => {
    const key = crypto.randomBytes(16).toString('base64')
    const socket = net.connect(port, host)
    let buffer = Buffer.alloc(0)
    let done = false
    const finish = (code) => {
      if (done) return
      done = true
      if (code === null) errors++
      else codes[code] = (codes[code] ?? 0) + 1
      answered++
      socket.destroy()
      resolve()
    }
    socket.on('connect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n` +
        'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
        `Sec-WebSocket-Key: ${key}\r\n` + (xff ? `X-Forwarded-For: ${xff}\r\n` : '') + '\r\n')
    })
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk])
      const end = buffer.indexOf('\r\n\r\n')
      if (end < 0) return
      // Server frames after the 101: skip pings (a ping round may catch us), stop at the
      // close frame (0x88, length, 2-byte code, reason) or any data frame.
      let frame = buffer.subarray(end + 4)
      while (frame.length >= 2) {
        const opcode = frame[0] & 0x0f
        const length = frame[1] & 0x7f // server control frames are short, never masked
        if (opcode === 0x9 && frame.length >= 2 + length) {
          frame = frame.subarray(2 + length)
          continue
        }
        if (opcode === 0x8) {
          if (frame.length >= 4) finish(frame.readUInt16BE(2))
        } else {
          finish(`opcode${opcode}`)
        }
        return
      }
    })
    socket.on('error', () => finish(null))
    socket.on('close', () => finish(null))
  })
}

function startProbe () {
  probeStarted = true
  const { url, doc, token, xff: probeXff } = spec.probe
  const ydoc = new Y.Doc()
  class ProbeSocket extends WebSocket {
    constructor (u, protocols) { super(u, protocols, { headers: { 'X-Forwarded-For': probeXff } }) }
  }
  const provider = new WebsocketProvider(url, doc, ydoc, {
    WebSocketPolyfill: ProbeSocket, disableBc: true, protocols: ['access_token', token],
    shouldReconnect: () => false
  })
  provider.on('connection-close', (event) => { probe.closed = event?.code ?? null })
  provider.on('sync', (synced) => {
    if (!synced || probe.synced) return
    probe.synced = true
    probe.answeredAtSync = answered
    // The server echoes an update once it is durable: our own edit coming back.
    provider.ws.addEventListener('message', (event) => {
      const bytes = new Uint8Array(event.data)
      if (!probe.confirmed && bytes[0] === 0 && bytes[1] === 2) {
        probe.confirmed = true
        probe.answeredAtConfirm = answered
        provider.destroy()
      }
    })
    ydoc.getText('t').insert(0, 'still served')
  })
}

const t0 = process.hrtime.bigint()
async function worker () {
  while (started < count) {
    started++
    await handshake()
    if (probe && !probeStarted && answered >= (spec.probeAfter ?? 100)) startProbe()
  }
}
await Promise.all(Array.from({ length: concurrency }, worker))
const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6
if (probe) {
  // The probe may still be finishing; give it a bounded time after the flood.
  const deadline = Date.now() + 20000
  while (!probe.confirmed && probe.closed === undefined && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
clearTimeout(hardTimeout)
console.log(JSON.stringify({ codes, errors, answered, elapsedMs, perSecond: answered / elapsedMs * 1000, probe }))
process.exit(0)

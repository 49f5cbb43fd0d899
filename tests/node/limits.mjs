// Scenario runner for tests/test_limits.py: real y-websocket providers, driven step by
// step, each step waiting for its outcome before the next starts.
//
// argv[2]: JSON {steps: [...], timeout: ms}. Steps:
//   {op: 'open', id, url, doc, token, xff?}   open a provider; result: {id, status: 'synced'}
//                                             or {id, status: 'closed', code, reason}
//   {op: 'close', id}                         destroy the provider, wait for its socket to close
//   {op: 'waitConnections', http, count}      poll GET /healthz until `connections` == count
//   {op: 'openRetry', id, every, max, ...}    'open' again every `every` ms until synced or
//                                             `max` ms: result {id, attempts: [code | 'synced']}
//   {op: 'edits', id, count, every, settle}   `count` edits (one update message each),
//                                             `every` ms apart; then wait up to `settle` ms
//                                             for a close. Result: {id, status, code, sent}
// Prints one JSON line {results: [...]}; exits non-zero (with what it saw) on a timeout.
// Providers never reconnect (shouldReconnect false), so a refusal is seen exactly once.

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const spec = JSON.parse(process.argv[2])
const results = []
const clients = new Map()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const hardTimeout = setTimeout(() => {
  console.log(JSON.stringify({ error: 'timeout', results }))
  process.exit(3)
}, spec.timeout ?? 60000)

function socketClass (headers, onSocket) {
  return class LimitsSocket extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, { headers, handshakeTimeout: 10000 })
      onSocket(this)
    }
  }
}

function open ({ id, url, doc, token, xff }) {
  return new Promise((resolve) => {
    const ydoc = new Y.Doc()
    const headers = xff ? { 'X-Forwarded-For': xff } : {}
    const state = { ydoc, socket: null, closed: null, done: false }
    state.socketClosed = new Promise((resolveClosed) => { state.onSocketClosed = resolveClosed })
    const provider = new WebsocketProvider(url, doc, ydoc, {
      WebSocketPolyfill: socketClass(headers, (ws) => {
        state.socket = ws
        ws.on('close', (code) => state.onSocketClosed(code))
      }),
      disableBc: true,
      protocols: ['access_token', token],
      shouldReconnect: () => false
    })
    state.provider = provider
    clients.set(id, state)
    const finish = (result) => {
      if (state.done) return
      state.done = true
      resolve(result)
    }
    provider.on('sync', (synced) => { if (synced) finish({ id, status: 'synced' }) })
    provider.on('connection-close', (event) => {
      state.closed = { code: event?.code ?? null, reason: event?.reason ?? '' }
      finish({ id, status: 'closed', ...state.closed })
    })
  })
}

async function close ({ id }) {
  const state = clients.get(id)
  const closed = state.closed ? Promise.resolve() : state.socketClosed
  state.provider.destroy()
  await closed
  return { id, status: 'destroyed' }
}

async function waitConnections ({ http, count }) {
  for (;;) {
    const health = await (await fetch(`${http}/healthz`)).json()
    if (health.connections === count) return { op: 'waitConnections', count }
    await sleep(20)
  }
}

async function edits ({ id, count, every = 0, settle = 1000 }) {
  const state = clients.get(id)
  const text = state.ydoc.getText('t')
  let sent = 0
  for (let i = 0; i < count && !state.closed; i++) {
    text.insert(text.length, 'x') // one transaction: one update message
    sent++
    if (every) await sleep(every)
  }
  const deadline = Date.now() + settle
  while (!state.closed && Date.now() < deadline) await sleep(10)
  return state.closed
    ? { id, status: 'closed', sent, ...state.closed }
    : { id, status: 'open', sent }
}

// Open again every `every` ms until synced (bounded by `max` ms): each attempt's outcome.
async function openRetry ({ id, every = 300, max = 20000, ...rest }) {
  const attempts = []
  const deadline = Date.now() + max
  for (let n = 0; ; n++) {
    const result = await open({ id: `${id}#${n}`, ...rest })
    attempts.push(result.status === 'synced' ? 'synced' : result.code)
    if (result.status === 'synced' || Date.now() > deadline) break
    await sleep(every)
  }
  return { id, attempts }
}

const ops = { open, close, waitConnections, edits, openRetry }
for (const step of spec.steps) {
  results.push({ op: step.op, ...(await ops[step.op](step)) })
}
for (const state of clients.values()) state.provider.destroy()
clearTimeout(hardTimeout)
console.log(JSON.stringify({ results }))
process.exit(0)

// Shared helpers for the interop scripts driven by tests/test_interop.py.
//
// Every script takes one JSON argument (argv[2]), prints JSON lines on stdout (the last
// one is its result) and always exits: `main` arms a hard timeout that prints what was
// observed so far and exits non-zero, so a test can never hang on a Node process.
//
// Clients are real y-websocket providers on `ws` (WebSocketPolyfill) with BroadcastChannel
// disabled, so two providers of one process can only meet through the server. The
// polyfill class is a `ws` subclass that can add headers/Origin and records, per
// provider and across reconnects: every socket opened, the subprotocol the server
// selected, pings, and the sync-update messages sent and received. A local update is
// *confirmed* once the server has echoed its exact bytes back: the server echoes only
// after the update is durable.

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

export { Y, WebSocket, WebsocketProvider }

export const spec = JSON.parse(process.argv[2] ?? '{}')

// Each provider adds a process 'exit' listener; dozens per process are expected here.
process.setMaxListeners(0)

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** Poll `predicate` every 10 ms; reject with `label` after `ms`. */
export async function waitFor (predicate, ms, label) {
  const deadline = Date.now() + ms
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${label}`)
    await sleep(10)
  }
}

const b64 = (data) => Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data).toString('base64')

// y-websocket sync update: varUint 0 (sync), varUint 2 (update), varBytes(update).
const isSyncUpdate = (bytes) => bytes.length > 2 && bytes[0] === 0 && bytes[1] === 2

/** A `ws` subclass for WebSocketPolyfill that records into `trace` and adds options. */
export function tracingSocket (trace, { headers, origin } = {}) {
  return class TracingSocket extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, { headers, origin, handshakeTimeout: 5000 })
      trace.sockets += 1
      this.on('upgrade', (res) => {
        trace.upgradeProtocols.push(res.headers['sec-websocket-protocol'] ?? null)
      })
      this.on('open', () => trace.protocols.push(this.protocol))
      this.on('ping', () => { trace.pings += 1 })
      this.on('message', (data) => {
        const bytes = new Uint8Array(data)
        trace.received += 1
        if (isSyncUpdate(bytes)) trace.receivedUpdates.add(b64(bytes))
        if (bytes[0] === 0 && bytes[1] === 1) trace.step2Sizes.push(bytes.length)
      })
    }

    send (data, ...rest) {
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data)
      if (isSyncUpdate(bytes)) trace.sentUpdates.push(b64(bytes))
      return super.send(data, ...rest)
    }
  }
}

/**
 * A provider on `url`/`room` with its own Y.Doc.
 *   via: 'protocol' (['access_token', JWT]), 'query' (?token=), 'header' (Bearer), 'none'
 *   protocols/params/headers/origin: extra or overriding handshake details
 *   reconnect: false makes every server close final (nothing re-sent after a restart)
 *   Provider: another WebsocketProvider class (e.g. y-websocket 1.x or 2.x, installed as
 *     the aliases y-websocket-1 and y-websocket-2)
 */
export function client (url, room, {
  token, via = 'protocol', protocols, params = {}, headers = {}, origin, reconnect = true,
  connect = true, Provider = WebsocketProvider
} = {}) {
  const trace = {
    sockets: 0, protocols: [], upgradeProtocols: [], pings: 0, received: 0,
    sentUpdates: [], receivedUpdates: new Set(), step2Sizes: []
  }
  params = { ...params }
  headers = { ...headers }
  if (protocols === undefined) protocols = []
  if (token !== undefined && token !== null) {
    if (via === 'protocol') protocols = ['access_token', token, ...protocols]
    else if (via === 'query') params.token = token
    else if (via === 'header') headers.Authorization = `Bearer ${token}`
  }
  const doc = new Y.Doc()
  const provider = new Provider(url, room, doc, {
    WebSocketPolyfill: tracingSocket(trace, { headers, origin }),
    disableBc: true,
    protocols,
    params,
    connect: false, // listeners first, so the first 'connecting' is recorded too
    shouldReconnect: reconnect ? undefined : () => false
  })
  const c = { doc, provider, trace, statuses: [], closes: [], errors: [], syncs: 0 }
  provider.on('status', ({ status }) => c.statuses.push(status))
  provider.on('sync', (state) => { if (state) c.syncs += 1 })
  provider.on('connection-close', (event) => {
    c.closes.push(event ? { code: event.code, reason: String(event.reason ?? '') } : null)
  })
  provider.on('connection-error', (event) => {
    c.errors.push(String(event?.message ?? event?.error?.message ?? 'error'))
  })
  if (connect) provider.connect()
  return c
}

export const synced = (c, ms = 5000) => waitFor(() => c.provider.synced, ms, 'sync')

/** True once every update this client sent has been echoed back by the server. */
export const isConfirmed = (c) => c.trace.sentUpdates.every((u) => c.trace.receivedUpdates.has(u))

export const confirmed = (c, ms = 5000) => waitFor(() => isConfirmed(c), ms, 'echo of own updates')

/** `value` with every object's keys sorted, so equal states stringify equal. */
const canonical = (value) => {
  if (Array.isArray(value)) return value.map(canonical)
  if (value === null || typeof value !== 'object') return value
  return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]))
}

/** The shared types the tests use: Y.Text 'text', Y.Map 'map', Y.Array 'list'. */
export function content (doc) {
  return canonical({
    text: doc.getText('text').toString(),
    map: doc.getMap('map').toJSON(),
    list: doc.getArray('list').toJSON()
  })
}

export const sameContent = (x, y) => JSON.stringify(content(x)) === JSON.stringify(content(y))

/** Run `body` with a hard timeout; its return value is the result line. */
export function main (body, hardMs = spec.hardMs ?? 30000) {
  const partial = {}
  const timer = setTimeout(() => {
    emit({ error: `hard timeout after ${hardMs} ms`, partial })
    process.exit(3)
  }, hardMs)
  body(partial).then((result) => {
    clearTimeout(timer)
    emit(result)
    process.exit(0)
  }, (error) => {
    clearTimeout(timer)
    emit({ error: String(error?.stack ?? error), partial })
    process.exit(1)
  })
}

// Many independent handshakes at once, each with a real provider (or a raw `ws` socket).
// spec: {url, hardMs, cases: [{id, room, token, via, protocols, params, headers, origin,
//        expect: 'ok' | 'close', write, raw}]}
//   expect 'close': wait for the first `connection-close` event; report its code/reason.
//   expect 'ok':    wait for sync; with `write` (a string) insert it into Y.Text 'text'
//                   and set map.writer, and wait until the server echoed it (durable);
//                   report the content. A close before that is reported as a failure.
//   raw: true       open a bare `ws` socket instead (protocols/headers/origin as given)
//                   and report the selected subprotocol and the first message / close.
import { WebSocket, client, confirmed, content, main, spec, synced, waitFor } from './lib.mjs'

const TIMEOUT = spec.caseTimeoutMs ?? 8000

async function providerCase (k) {
  const c = client(spec.url, k.room, {
    token: k.token, via: k.via, protocols: k.protocols, params: k.params, headers: k.headers,
    origin: k.origin, reconnect: false
  })
  const out = { id: k.id }
  try {
    if (k.expect === 'close') {
      await waitFor(() => c.closes.length > 0, TIMEOUT, 'connection-close')
    } else {
      await waitFor(() => c.provider.synced || c.closes.length > 0, TIMEOUT, 'sync')
      if (c.provider.synced && k.write !== undefined) {
        c.doc.transact(() => {
          c.doc.getText('text').insert(0, k.write)
          c.doc.getMap('map').set('writer', k.write)
        })
        await confirmed(c, TIMEOUT)
      }
      out.content = content(c.doc)
    }
  } catch (e) {
    out.error = String(e.message)
  }
  out.synced = c.provider.synced
  out.opened = c.statuses.includes('connected')
  out.close = c.closes[0] ?? null
  out.errors = c.errors
  out.protocol = c.trace.protocols[0] ?? null
  out.upgradeProtocol = c.trace.upgradeProtocols[0] ?? null
  c.provider.destroy()
  return out
}

function rawCase (k) {
  return new Promise((resolve) => {
    const out = { id: k.id, upgradeProtocol: null, protocol: null, opened: false,
      firstMessage: null, close: null, error: null }
    let ws
    const finish = () => { clearTimeout(timer); resolve(out) }
    const timer = setTimeout(() => { out.error = out.error ?? 'timeout'; ws?.terminate(); finish() }, TIMEOUT)
    try {
      ws = new WebSocket(`${spec.url}/${k.room}`, k.protocols ?? [],
        { headers: k.headers, origin: k.origin })
    } catch (e) {
      out.error = String(e.message)
      return finish()
    }
    ws.on('upgrade', (res) => { out.upgradeProtocol = res.headers['sec-websocket-protocol'] ?? null })
    ws.on('open', () => { out.opened = true; out.protocol = ws.protocol })
    ws.on('message', (data) => {
      if (out.firstMessage === null) {
        out.firstMessage = Array.from(new Uint8Array(data).slice(0, 2))
        if (k.expect !== 'close') ws.close()
      }
    })
    ws.on('error', (e) => { out.error = String(e.message) })
    ws.on('close', (code, reason) => {
      out.close = { code, reason: reason.toString() }
      finish()
    })
  })
}

main(async () => {
  const results = await Promise.all(spec.cases.map((k) => (k.raw ? rawCase(k) : providerCase(k))))
  return { results: Object.fromEntries(results.map((r) => [r.id, r])) }
}, spec.hardMs ?? 30000)

// One provider on a document nobody edits stays connected for `durationMs` (> 45 s):
// nothing but its own awareness renewal (every 15 s, echoed by the server) and the
// server's pings arrives. Counts every status change, close and socket.
// spec: {url, token, room, durationMs}
import { client, main, sleep, spec, synced } from './lib.mjs'

main(async (partial) => {
  const q = client(spec.url, spec.room, { token: spec.token })
  await synced(q)
  const ws = q.provider.ws
  const started = Date.now()
  while (Date.now() - started < spec.durationMs) {
    await sleep(500)
    partial.statuses = q.statuses
    partial.closes = q.closes
    partial.elapsedMs = Date.now() - started
  }
  return {
    elapsedMs: Date.now() - started,
    statuses: q.statuses,
    closes: q.closes,
    errors: q.errors,
    sockets: q.trace.sockets,
    sameSocket: q.provider.ws === ws,
    connected: q.provider.wsconnected,
    synced: q.provider.synced,
    pings: q.trace.pings,
    received: q.trace.received
  }
}, spec.durationMs + 20000)

// Edits going on while the server is killed (kill -9). W sets map key k<i> = i every
// `intervalMs` (one update each) until its connection drops, and reports which of those
// updates the server had echoed (confirmed: the server echoes only durable updates).
// spec: {url, token, room, intervalMs}
import { client, emit, main, sleep, spec, synced, waitFor } from './lib.mjs'

main(async () => {
  const w = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  await synced(w)
  const map = w.doc.getMap('map')
  const sent = [] // [i, the update's bytes as sent]
  emit({ phase: 'writing' })
  for (let i = 0; !w.closes.length && i < 100000; i++) {
    map.set(`k${i}`, i)
    sent.push([i, w.trace.sentUpdates[w.trace.sentUpdates.length - 1]])
    await sleep(spec.intervalMs)
  }
  await waitFor(() => w.closes.length, 20000, 'the connection to drop')
  const confirmed = sent.filter(([, u]) => w.trace.receivedUpdates.has(u)).map(([i]) => i)
  return { confirmed, sent: sent.length, close: w.closes[0] }
}, spec.hardMs ?? 60000)

// Fan-out latency probe for scripts/bench-fanout (not a test): a writer on spec.writerUrl
// sets one map key per update at spec.rate per second, stamped with its send time; readers
// on every URL of spec.readerUrls note when each key arrives (same process, same clock).
// Prints {readers: [{url, n, p50, p95, p99, max}], sent}.
// spec: {writerUrl, readerUrls, token, room, count, rate}
import { client, main, sleep, spec, synced, waitFor } from './lib.mjs'

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)]
const r2 = (x) => Math.round(x * 100) / 100

main(async () => {
  const w = client(spec.writerUrl, spec.room, { token: spec.token })
  const readers = spec.readerUrls.map((url) => ({ url, c: client(url, spec.room, { token: spec.token }), lat: [] }))
  await Promise.all([synced(w), ...readers.map((r) => synced(r.c))])
  const sentAt = new Map()
  for (const r of readers) {
    r.c.doc.getMap('m').observe((event) => {
      const now = performance.now()
      for (const k of event.keysChanged) if (sentAt.has(k)) r.lat.push(now - sentAt.get(k))
    })
  }
  const map = w.doc.getMap('m')
  const gap = 1000 / spec.rate
  const t0 = performance.now()
  for (let i = 0; i < spec.count; i++) {
    const at = t0 + i * gap
    const wait = at - performance.now()
    if (wait > 0) await sleep(wait)
    sentAt.set(`k${i}`, performance.now())
    map.set(`k${i}`, i)
  }
  await waitFor(() => readers.every((r) => r.lat.length >= spec.count), 20000, 'every delivery')
  return {
    sent: spec.count,
    readers: readers.map((r) => {
      const s = r.lat.slice().sort((a, b) => a - b)
      return { url: r.url, n: s.length, p50: r2(pct(s, 50)), p95: r2(pct(s, 95)), p99: r2(pct(s, 99)), max: r2(s[s.length - 1]) }
    })
  }
}, 120000)

// Edits confirmed before a kill -9. W makes `count` separate updates; once the server
// has echoed every one back to W (it echoes only durable updates) and observer O has
// seen them all, prints {"phase":"ready", content}. The test then kills the server
// with SIGKILL; neither client reconnects, so nothing can be re-sent after the restart.
// spec: {url, token, room, count}
import { client, confirmed, content, emit, main, sameContent, spec, synced, waitFor } from './lib.mjs'

main(async () => {
  const w = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  const o = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  await Promise.all([synced(w), synced(o)])
  const text = w.doc.getText('text')
  const map = w.doc.getMap('map')
  for (let i = 0; i < spec.count; i++) {
    text.insert(text.length, `[${i}]`)
    map.set(`k${i}`, i)
  }
  await confirmed(w, 10000)
  await waitFor(() => sameContent(w.doc, o.doc), 10000, 'the observer to see every edit')
  emit({ phase: 'ready', content: content(w.doc), updates: w.trace.sentUpdates.length })
  await waitFor(() => w.closes.length && o.closes.length, 20000, 'the connections to drop')
  return { content: content(w.doc), closes: { w: w.closes[0], o: o.closes[0] } }
}, spec.hardMs ?? 40000)

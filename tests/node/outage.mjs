// Edits while the storage is down. W writes one edit every `intervalMs` for `durationMs`
// (the test stops Postgres meanwhile) and records how many of its updates were
// unconfirmed at most: the server echoes an update only once it is committed. Then it
// waits until every update is confirmed and observer O has them all.
// spec: {url, token, room, durationMs, intervalMs}
import { client, confirmed, content, emit, main, sameContent, sleep, spec, synced, waitFor } from './lib.mjs'

main(async () => {
  const w = client(spec.url, spec.room, { token: spec.token })
  const o = client(spec.url, spec.room, { token: spec.token })
  await Promise.all([synced(w), synced(o)])
  const text = w.doc.getText('text')
  const map = w.doc.getMap('map')
  const unconfirmed = () => w.trace.sentUpdates.filter((u) => !w.trace.receivedUpdates.has(u)).length
  let maxUnconfirmed = 0
  let count = 0
  emit({ phase: 'writing' })
  const end = Date.now() + spec.durationMs
  while (Date.now() < end) {
    text.insert(text.length, `[${count}]`)
    map.set(`k${count}`, count)
    count += 1
    await sleep(spec.intervalMs)
    maxUnconfirmed = Math.max(maxUnconfirmed, unconfirmed())
  }
  emit({ phase: 'written', count })
  await confirmed(w, 60000)
  await waitFor(() => sameContent(w.doc, o.doc), 20000, 'the observer to see every edit')
  const result = { content: content(w.doc), count, maxUnconfirmed, wCloses: [...w.closes], oCloses: [...o.closes] }
  w.provider.destroy()
  o.provider.destroy()
  return result
}, spec.hardMs ?? 120000)

// Two server processes on one database, each with the document loaded: A writes through
// server 1 and B through server 2 at the same time (neither server relays to the other).
// Once both have left and the servers have unloaded (and compacted) the document, a
// reader on each server must load the same document holding every edit.
// spec: {urls: [url1, url2], token, room, edits, settleMs}
import { client, confirmed, content, emit, main, sleep, spec, synced } from './lib.mjs'

async function writer (url, tag) {
  const c = client(url, spec.room, { token: spec.token, reconnect: false })
  await synced(c)
  for (let i = 0; i < spec.edits; i++) {
    c.doc.getText('text').insert(0, `${tag}${i};`)
    c.doc.getMap('map').set(`${tag}${i}`, i)
    if (i % 5 === 4) await sleep(5)
  }
  await confirmed(c, 20000)
  c.provider.destroy()
}

main(async () => {
  await Promise.all([writer(spec.urls[0], 'a'), writer(spec.urls[1], 'b')])
  emit({ phase: 'written' })
  await sleep(spec.settleMs)
  const readers = spec.urls.map((url) => client(url, spec.room, { token: spec.token, reconnect: false }))
  await Promise.all(readers.map((r) => synced(r)))
  const result = { contents: readers.map((r) => content(r.doc)) }
  readers.forEach((r) => r.provider.destroy())
  return result
}, spec.hardMs ?? 60000)

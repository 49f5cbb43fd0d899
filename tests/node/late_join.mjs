// A writer builds a document out of many updates (inserts, deletes, map and array
// changes); a provider joining while the writer is connected, and one joining after the
// writer has left, must both get the full state from the server.
// spec: {url, token, room}
import { Y, client, confirmed, content, main, spec, synced } from './lib.mjs'

main(async (partial) => {
  const w = client(spec.url, spec.room, { token: spec.token })
  await synced(w)
  const text = w.doc.getText('text')
  const map = w.doc.getMap('map')
  const list = w.doc.getArray('list')
  text.insert(0, 'hello world')
  text.delete(6, 5) // a delete set, not just inserts
  text.insert(6, 'yjs')
  for (let i = 0; i < 20; i++) map.set(`k${i}`, { i, even: i % 2 === 0 })
  map.delete('k0')
  list.push(['one', 'two', 'three'])
  list.delete(1, 1)
  w.doc.transact(() => {
    text.insert(text.length, '!')
    map.set('last', 'transaction')
  })
  await confirmed(w)
  partial.writer = content(w.doc)

  const joiner = client(spec.url, spec.room, { token: spec.token })
  await synced(joiner)
  const whileConnected = content(joiner.doc)

  w.provider.destroy()
  joiner.provider.destroy()
  const after = client(spec.url, spec.room, { token: spec.token })
  await synced(after)

  // A client that already has everything must get a step 2 with (next to) nothing.
  const known = client(spec.url, spec.room, { token: spec.token, connect: false })
  Y.applyUpdate(known.doc, Y.encodeStateAsUpdate(w.doc))
  known.provider.connect()
  await synced(known)
  return {
    step2Sizes: { empty: w.trace.step2Sizes, full: after.trace.step2Sizes, known: known.trace.step2Sizes },
    writer: content(w.doc),
    whileConnected,
    afterLeft: content(after.doc),
    updatesSent: w.trace.sentUpdates.length
  }
})

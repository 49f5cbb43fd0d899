// A read-only viewer next to a writer (tests/test_access.py).
//
// W has a write token, R a read-only one (`access: "read"`), both on spec.room.
//   1. both sync; each sees the other's presence (R's awareness is relayed).
//   2. W edits: R sees it live, and W's edit is confirmed (echoed).
//   3. R edits (text and map), then sets an awareness field as a barrier: the server
//      handles one connection's messages in order, so once W sees the barrier the server
//      has already dropped R's edit. W must not have it, R must never get its echo.
//   4. R reconnects: its step 2 now carries the offline edit; barrier again; W still
//      does not have it, and R was not closed for it.
//   5. W edits again: R still receives it. A late joiner L syncs W's content only.
// spec: {url, room, writeToken, readToken}
import { client, confirmed, content, isConfirmed, main, sleep, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const w = client(spec.url, spec.room, { token: spec.writeToken })
  const r = client(spec.url, spec.room, { token: spec.readToken })
  w.provider.awareness.setLocalStateField('user', { name: 'writer' })
  r.provider.awareness.setLocalStateField('user', { name: 'viewer' })
  await Promise.all([synced(w), synced(r)])
  const state = (c, other) => c.provider.awareness.getStates().get(other.doc.clientID)
  await waitFor(() => state(w, r)?.user?.name === 'viewer', 5000, 'W to see R\'s presence')
  await waitFor(() => state(r, w)?.user?.name === 'writer', 5000, 'R to see W\'s presence')
  partial.presence = true

  w.doc.getText('text').insert(0, 'hello')
  await waitFor(() => r.doc.getText('text').toString() === 'hello', 5000, 'R to see W\'s edit')
  await confirmed(w)
  partial.live = true

  const barrier = async (n) => {
    r.provider.awareness.setLocalStateField('barrier', n)
    await waitFor(() => state(w, r)?.barrier === n, 5000, `W to see R's barrier ${n}`)
  }
  r.doc.getText('text').insert(0, 'EVIL ')
  r.doc.getMap('map').set('evil', true)
  await barrier(1)
  const writerAfterEdit = content(w.doc)
  const readerSentUpdates = r.trace.sentUpdates.length
  // Give an echo (which would come right after the commit) time to show up if it did.
  await sleep(300)
  const readerConfirmed = isConfirmed(r)
  partial.dropped = writerAfterEdit

  const socketsBefore = r.trace.sockets
  r.provider.disconnect()
  r.provider.connect()
  await waitFor(() => r.trace.sockets > socketsBefore && r.provider.synced, 5000, 'R to resync')
  await barrier(2)
  const writerAfterReconnect = content(w.doc)

  w.doc.getText('text').insert(5, ' world')
  await waitFor(() => r.doc.getText('text').toString().endsWith('hello world'), 5000,
    'R to see W\'s second edit')
  await confirmed(w)

  const late = client(spec.url, spec.room, { token: spec.writeToken })
  await synced(late)
  await sleep(200) // anything the server still had to send
  return {
    writerAfterEdit,
    writerAfterReconnect,
    writer: content(w.doc),
    reader: content(r.doc),
    late: content(late.doc),
    readerSentUpdates,
    readerConfirmed,
    readerCloses: r.closes,
    writerCloses: w.closes,
    readerSockets: r.trace.sockets
  }
})

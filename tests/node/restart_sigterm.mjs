// Server restart with SIGTERM, seen by providers. Prints {"phase":"ready"} once every
// edit is confirmed; the test then SIGTERMs and restarts the server on the same port.
//   W on `persistRoom` never reconnects: after the restart a fresh reader must find W's
//     edits in storage (nobody else holds them to re-send).
//   A and B on `liveRoom` reconnect by themselves and keep collaborating.
// spec: {url, token, persistRoom, liveRoom}
import { client, confirmed, content, emit, main, sameContent, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const w = client(spec.url, spec.persistRoom, { token: spec.token, reconnect: false })
  const a = client(spec.url, spec.liveRoom, { token: spec.token })
  const b = client(spec.url, spec.liveRoom, { token: spec.token })
  // (A field, not the initial {} at clock 0, which y-protocols peers ignore.)
  a.provider.awareness.setLocalStateField('user', 'a')
  b.provider.awareness.setLocalStateField('user', 'b')
  await Promise.all([synced(w), synced(a), synced(b)])
  w.doc.getText('text').insert(0, 'written before SIGTERM')
  w.doc.getMap('map').set('by', 'w')
  a.doc.getText('text').insert(0, 'A before. ')
  b.doc.getMap('map').set('b', 'before')
  await Promise.all([confirmed(w), confirmed(a), confirmed(b)])
  await waitFor(() => sameContent(a.doc, b.doc), 5000, 'A and B to converge')
  emit({ phase: 'ready' })

  await waitFor(() => w.closes.length && a.closes.length && b.closes.length, 20000,
    'the server to close every provider')
  partial.closes = { w: w.closes[0], a: a.closes[0], b: b.closes[0] }
  // An edit made while the server is down reaches B through A's step 2 on reconnect.
  const offline = !a.provider.wsconnected
  a.doc.getText('text').insert(a.doc.getText('text').length, 'A offline. ')
  // The test restarts the server; A and B come back on their own.
  await waitFor(() => a.syncs >= 2 && b.syncs >= 2 && a.provider.synced && b.provider.synced,
    30000, 'A and B to reconnect and sync')
  a.doc.getText('text').insert(a.doc.getText('text').length, 'A after.')
  await confirmed(a)
  await waitFor(() => sameContent(a.doc, b.doc), 5000, 'A and B to converge after restart')
  // The server's awareness is rebuilt from what the reconnected providers announced: a
  // newcomer sees both. (A and B themselves ignore each other's re-announcement until
  // the next 15 s renewal: y-protocols keeps the old clock of a peer it removed.)
  const v = client(spec.url, spec.liveRoom, { token: spec.token, reconnect: false })
  await synced(v)
  const sees = (x, y) => x.provider.awareness.getStates().has(y.doc.clientID)
  await waitFor(() => sees(v, a) && sees(v, b), 5000, 'a newcomer to see A and B')

  const r = client(spec.url, spec.persistRoom, { token: spec.token, reconnect: false })
  await synced(r)
  return {
    closes: { w: w.closes[0], a: a.closes[0], b: b.closes[0] },
    offline,
    wStatuses: w.statuses,
    aStatuses: a.statuses,
    persisted: content(r.doc),
    a: content(a.doc),
    b: content(b.doc)
  }
}, spec.hardMs ?? 60000)

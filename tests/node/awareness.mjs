// Awareness through the server: B sees A's state (with a field A set); C, joining later,
// gets it from the server on join; when A's connection is cut without A sending anything
// (no null state), B and C must see A removed by the server's broadcast, long before the
// 30 s client-side timeout.
// spec: {url, token, room}
import { client, main, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const a = client(spec.url, spec.room, { token: spec.token })
  a.provider.awareness.setLocalStateField('user', { name: 'alice', color: '#ff0000' })
  const b = client(spec.url, spec.room, { token: spec.token })
  b.provider.awareness.setLocalStateField('user', { name: 'bob' })
  const aId = a.doc.clientID
  await Promise.all([synced(a), synced(b)])
  const seenBy = (c) => c.provider.awareness.getStates().get(aId)?.user?.name === 'alice'
  await waitFor(() => seenBy(b), 5000, 'B to see A\'s awareness')
  const bSaw = b.provider.awareness.getStates().get(aId)
  const bKeys = [...b.provider.awareness.getStates().keys()]
  partial.bSaw = bSaw

  // C joins later; A does not re-send its state (it renews only every 15 s).
  const t1 = Date.now()
  const c = client(spec.url, spec.room, { token: spec.token })
  await synced(c)
  await waitFor(() => seenBy(c), 5000, 'C to see A\'s awareness on join')
  const cSawAfterMs = Date.now() - t1
  const cKeys = [...c.provider.awareness.getStates().keys()]

  // Cut A's TCP connection: no close frame, no awareness null state from A.
  a.provider.shouldConnect = false
  const t0 = Date.now()
  a.provider.ws.terminate()
  const gone = (x) => !x.provider.awareness.getStates().has(aId)
  await waitFor(() => gone(b) && gone(c), 10000, 'A\'s awareness to disappear')
  const removedAfterMs = Date.now() - t0
  return {
    aId,
    bId: b.doc.clientID,
    cId: c.doc.clientID,
    bSaw,
    bKeys,
    cKeys,
    cSawAfterMs,
    removedAfterMs,
    bKeysAfter: [...b.provider.awareness.getStates().keys()],
    cKeysAfter: [...c.provider.awareness.getStates().keys()],
    bCloses: b.closes,
    cCloses: c.closes
  }
})

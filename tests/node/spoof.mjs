// Awareness spoofing through the server: A (alice) and B are real providers; a raw `ws`
// socket with a valid token of another user sends awareness entries for A's client id
// (a new name, then a removal) and one for an id of its own, then disconnects. B must
// keep seeing alice, and see the spoofer's own id come and go.
// spec: {url, token, spooferToken, room}
import * as encoding from 'lib0/encoding'
import { WebSocket, client, main, sleep, spec, synced, waitFor } from './lib.mjs'

const SPOOFER_ID = 4242

/** A y-websocket awareness message: varUint 1, varBytes(awareness update). */
function awarenessMessage (entries) {
  const update = encoding.createEncoder()
  encoding.writeVarUint(update, entries.length)
  for (const [clientId, clock, state] of entries) {
    encoding.writeVarUint(update, clientId)
    encoding.writeVarUint(update, clock)
    encoding.writeVarString(update, JSON.stringify(state))
  }
  const message = encoding.createEncoder()
  encoding.writeVarUint(message, 1)
  encoding.writeVarUint8Array(message, encoding.toUint8Array(update))
  return encoding.toUint8Array(message)
}

main(async () => {
  const a = client(spec.url, spec.room, { token: spec.token })
  a.provider.awareness.setLocalStateField('user', { name: 'alice' })
  const b = client(spec.url, spec.room, { token: spec.token })
  await Promise.all([synced(a), synced(b)])
  const aId = a.doc.clientID
  const nameSeenByB = () => b.provider.awareness.getStates().get(aId)?.user?.name
  await waitFor(() => nameSeenByB() === 'alice', 5000, 'B to see alice')
  const names = []
  b.provider.awareness.on('change', () => names.push(nameSeenByB() ?? null))

  const spoofer = new WebSocket(`${spec.url}/${spec.room}`, ['access_token', spec.spooferToken])
  await new Promise((resolve, reject) => { spoofer.on('open', resolve); spoofer.on('error', reject) })
  const clock = a.provider.awareness.meta.get(aId).clock
  spoofer.send(awarenessMessage([[aId, clock + 10, { user: { name: 'mallory' } }],
    [SPOOFER_ID, 1, { user: { name: 'spoofer' } }]]))
  await waitFor(() => b.provider.awareness.getStates().has(SPOOFER_ID), 5000,
    'B to see the spoofer\'s own id')
  spoofer.send(awarenessMessage([[aId, clock + 11, null]]))
  await sleep(300)
  const nameAfterSpoof = nameSeenByB() ?? null
  spoofer.close()
  await waitFor(() => !b.provider.awareness.getStates().has(SPOOFER_ID), 5000,
    'the spoofer\'s own id to be removed when it leaves')
  await sleep(300)
  return {
    aId,
    nameAfterSpoof,
    nameAfterSpooferLeft: nameSeenByB() ?? null,
    namesSeenByB: names,
    bKeys: [...b.provider.awareness.getStates().keys()]
  }
})

// kill -9 of one process in the middle of writing. Writer W (on spec.writerUrl) sets
// map keys k0, k1, ... every few ms; observer O is on spec.otherUrl. Once 20 of W's
// updates are confirmed (echoed: durable), prints {"phase":"writing"}; the test then
// kills W's server with SIGKILL while W keeps writing. When W's connection drops, a
// fresh client F on the other process must hold every key whose update W saw echoed,
// and W's awareness state must disappear from O within bounded time.
// spec: {writerUrl, otherUrl, token, room}
import { client, emit, main, sleep, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const w = client(spec.writerUrl, spec.room, { token: spec.token, reconnect: false })
  const o = client(spec.otherUrl, spec.room, { token: spec.token })
  w.provider.awareness.setLocalStateField('user', { name: 'writer' })
  await Promise.all([synced(w), synced(o)])
  const wId = w.doc.clientID
  await waitFor(() => o.provider.awareness.getStates().has(wId), 5000, 'O to see W\'s awareness')
  const map = w.doc.getMap('map')
  const sent = [] // [i, base64 of the update message]
  let announced = false
  for (let i = 0; !w.closes.length; i++) {
    map.set(`k${i}`, i)
    sent.push([i, w.trace.sentUpdates[w.trace.sentUpdates.length - 1]])
    const confirmedCount = sent.filter(([, u]) => w.trace.receivedUpdates.has(u)).length
    if (!announced && confirmedCount >= 20) {
      announced = true
      emit({ phase: 'writing' })
    }
    await sleep(3)
  }
  const killedAt = Date.now()
  const confirmedKeys = sent.filter(([, u]) => w.trace.receivedUpdates.has(u)).map(([i]) => `k${i}`)
  partial.confirmed = confirmedKeys.length
  const f = client(spec.otherUrl, spec.room, { token: spec.token })
  await synced(f)
  const fMap = f.doc.getMap('map')
  const lacking = () => confirmedKeys.filter((k) => !fMap.has(k))
  // The other process read them from the stream before the kill, or is reading them now.
  await waitFor(() => lacking().length === 0, 3000, 'F to hold every confirmed key').catch(() => {})
  const missing = lacking()
  await waitFor(() => !o.provider.awareness.getStates().has(wId), 30000, 'W\'s awareness to expire at O')
  return {
    sent: sent.length,
    confirmed: confirmedKeys.length,
    missing,
    observerHasAll: confirmedKeys.every((k) => o.doc.getMap('map').has(k)),
    awarenessGoneAfterMs: Date.now() - killedAt,
    writerClose: w.closes[0]
  }
}, spec.hardMs ?? 60000)

// Two providers edit a Y.Text and a Y.Map concurrently; both must converge to one state
// holding every edit, and a third provider joining afterwards must get that same state.
// spec: {url, token, room, rounds}
import { client, confirmed, content, isConfirmed, main, sameContent, sleep, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const rounds = spec.rounds ?? 15
  const a = client(spec.url, spec.room, { token: spec.token })
  const b = client(spec.url, spec.room, { token: spec.token })
  await Promise.all([synced(a), synced(b)])
  const ta = a.doc.getText('text')
  const tb = b.doc.getText('text')
  const ma = a.doc.getMap('map')
  const mb = b.doc.getMap('map')

  // Round 0: both edit in the same tick, so neither has seen the other's edit.
  ta.insert(0, '<alpha>')
  ma.set('shared', 'from-a')
  tb.insert(0, '<bravo>')
  mb.set('shared', 'from-b')
  // Further rounds interleave with the traffic: A appends, B prepends.
  for (let i = 1; i <= rounds; i++) {
    ta.insert(ta.length, `[A${i}]`)
    ma.set(`a${i}`, i)
    tb.insert(0, `[B${i}]`)
    mb.set(`b${i}`, i)
    await sleep(i % 3)
  }
  partial.a = content(a.doc)
  partial.b = content(b.doc)
  await waitFor(() => sameContent(a.doc, b.doc) && isConfirmed(a) && isConfirmed(b), 10000, 'convergence')
  await Promise.all([confirmed(a), confirmed(b)])

  const c = client(spec.url, spec.room, { token: spec.token })
  await synced(c)
  return {
    a: content(a.doc),
    b: content(b.doc),
    late: content(c.doc),
    clients: [a.doc.clientID, b.doc.clientID],
    sent: [a.trace.sentUpdates.length, b.trace.sentUpdates.length]
  }
})

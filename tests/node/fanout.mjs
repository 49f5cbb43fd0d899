// Clients of one document spread over several server processes (one per entry of
// `urls`; the same URL twice for gunicorn workers behind one port). Checks, in order:
// awareness crosses both ways; concurrent edits converge, every client's edits echoed;
// late joiners on every URL get the same content; a client whose TCP connection is cut
// is removed from every other client's awareness by the servers (give it a process of
// its own: urls[0] appearing once).
// spec: {urls, token, room, rounds, pauseFile, staggerMs, awarenessMs}: with pauseFile, prints {"phase":"ready"}
// once converged and waits for that file (the test looks at /healthz meanwhile).
import fs from 'node:fs'
import { client, content, emit, isConfirmed, main, sameContent, sleep, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const rounds = spec.rounds ?? 20
  const cs = []
  for (const url of spec.urls) { // staggerMs apart: lets the kernel hand them to other workers
    cs.push(client(url, spec.room, { token: spec.token }))
    if (spec.staggerMs) await sleep(spec.staggerMs)
  }
  cs.forEach((c, i) => c.provider.awareness.setLocalStateField('user', { name: `u${i}` }))
  await Promise.all(cs.map((c) => synced(c)))
  const sees = (x, y) => x.provider.awareness.getStates().get(y.doc.clientID)?.user?.name !== undefined
  const t0 = Date.now()
  await waitFor(() => cs.every((x) => cs.every((y) => sees(x, y))), spec.awarenessMs ?? 10000, 'awareness of every client everywhere')
  const awarenessMs = Date.now() - t0

  for (let r = 0; r < rounds; r++) {
    cs.forEach((c, i) => {
      const text = c.doc.getText('text')
      text.insert(r % 2 ? text.length : 0, `[${i}.${r}]`)
      c.doc.getMap('map').set(`c${i}r${r}`, r)
    })
    await sleep(r % 3)
  }
  partial.contents = cs.map((c) => content(c.doc))
  await waitFor(() => cs.every((c) => sameContent(c.doc, cs[0].doc) && isConfirmed(c)), 15000, 'convergence')
  if (spec.pauseFile) {
    emit({ phase: 'ready' })
    await waitFor(() => fs.existsSync(spec.pauseFile), 60000, 'the test to go on')
  }
  const late = spec.urls.map((url) => client(url, spec.room, { token: spec.token }))
  await Promise.all(late.map((c) => synced(c)))
  await waitFor(() => late.every((c) => sameContent(c.doc, cs[0].doc)), 5000, 'late joiners')

  late.forEach((c) => c.provider.destroy())
  // Cut the first client's connection (no close frame, no null state from it). Providers
  // re-send every awareness change they receive, so the removal must be seen to come
  // from the servers: put the cut client alone on its process (urls[0] once only).
  const gone = cs[0]
  gone.provider.shouldConnect = false
  const t1 = Date.now()
  gone.provider.ws.terminate()
  const rest = cs.slice(1)
  await waitFor(() => rest.every((c) => !c.provider.awareness.getStates().has(gone.doc.clientID)), 10000, 'the cut client removed everywhere')
  const removedMs = Date.now() - t1
  return {
    converged: true,
    content: content(cs[0].doc),
    late: late.map((c) => content(c.doc)),
    awarenessMs,
    removedMs,
    updates: cs.map((c) => c.trace.sentUpdates.length)
  }
}, spec.hardMs ?? 60000)

// Clients on several processes keep editing for spec.durationMs while the test breaks
// Redis (SIGSTOP/SIGCONT, or a restart with nothing in it). Two clients share the first
// process (local fan-out must go on without Redis). Prints {"phase":"editing"} once
// everyone is synced; afterwards waits for convergence (every key of every client) and,
// for the clients that were never disconnected, for every update to be echoed; then
// late joiners on every process must see the same content.
// spec: {urls, token, room, durationMs}
// Result: echo times of client 0 (ms since epoch) and the times client 1 (same process)
// received client 0's updates, so the test can check both went on during the outage.
import { client, content, emit, isConfirmed, main, sameContent, sleep, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const urls = [spec.urls[0], ...spec.urls]
  const cs = urls.map((url) => client(url, spec.room, { token: spec.token }))
  await Promise.all(cs.map((c) => synced(c)))
  const echoes = []
  const localSeen = []
  const sent0 = new Set()
  const seen0 = cs[0].trace.receivedUpdates
  let lastEchoCount = 0
  const c1map = cs[1].doc.getMap('map')
  c1map.observe((event) => {
    for (const k of event.keysChanged) if (k.startsWith('c0r')) localSeen.push(Date.now())
  })
  emit({ phase: 'editing' })
  const end = Date.now() + spec.durationMs
  for (let r = 0; Date.now() < end; r++) {
    cs.forEach((c, i) => c.doc.getMap('map').set(`c${i}r${r}`, r))
    cs[0].doc.getText('text').insert(0, `[${r}]`)
    await sleep(20)
    const echoed = cs[0].trace.sentUpdates.filter((u) => seen0.has(u)).length
    if (echoed > lastEchoCount) echoes.push(Date.now())
    lastEchoCount = echoed
    sent0.add(r)
  }
  partial.contents = cs.map((c) => content(c.doc))
  const ours = (doc) => Object.keys(doc.getMap('map').toJSON()).filter((k) => /^c\d+r\d+$/.test(k))
  const written = (doc) => ours(doc).length === cs.length * sent0.size
  await waitFor(() => cs.every((c) => sameContent(c.doc, cs[0].doc) && written(c.doc)), 30000, 'convergence')
  // A client that was disconnected re-sends what it has as a sync step 2, which is not
  // echoed byte for byte: only clients that stayed connected can wait for every echo.
  const stayed = cs.filter((c) => c.closes.length === 0)
  await waitFor(() => stayed.every((c) => isConfirmed(c)), 20000, 'every update echoed')
  const late = spec.urls.map((url) => client(url, spec.room, { token: spec.token }))
  await Promise.all(late.map((c) => synced(c)))
  await waitFor(() => late.every((c) => sameContent(c.doc, cs[0].doc)), 10000, 'late joiners')
  return {
    converged: true,
    keys: ours(cs[0].doc).length,
    rounds: sent0.size,
    echoes,
    localSeen,
    closes: cs.map((c) => c.closes)
  }
}, spec.hardMs ?? 90000)

// Presence after a failover, with y-websocket 1.5.4, 2.1 and 3.1: six clients, two per
// version, each its own user (spec.tokens). With two URLs, three clients are on the
// process that will die (spec.urls[0]) and three on the other; with one (gunicorn's
// port), the kernel spreads them over the workers. Once everyone sees everyone, prints
// {"phase":"ready"}; the test then kills a process (kill -9) and, with spec.restart,
// starts it again on the same port (a replaced worker). Without it, with two URLs, the
// cut clients move to the other process.
//
// Then, for every pair (observer, client), the time at which the observer sees the client
// again as the client announced itself *after* its reconnect, for a client that was cut:
// its state present with a clock newer than the observer knew before the kill
// (y-protocols ignores a state whose clock is not newer than a removal it saw, and a
// state the dead process relayed is removed once that process is declared gone); for a
// client that was not cut, its state present. Result: per reconnected client, how long
// after its reconnect every peer saw it, and it saw every peer.
// spec: {urls: [dying, other] or [url], tokens: [6 JWTs], room, restart, windowMs}
import { WebsocketProvider as Provider1 } from 'y-websocket-1'
import { WebsocketProvider as Provider2 } from 'y-websocket-2'
import { client, emit, main, sleep, spec, waitFor } from './lib.mjs'
import { WebsocketProvider as Provider3 } from 'y-websocket'

const versions = [['1.5.4', Provider1, 'query'], ['2.1', Provider2, 'protocol'], ['3.1', Provider3, 'protocol']]

main(async (partial) => {
  const [dying, other] = spec.urls
  const clients = []
  for (let i = 0; i < 6; i++) {
    const [version, Provider, via] = versions[i % 3]
    const url = other === undefined || i < 3 ? dying : other
    const c = client(url, spec.room, { token: spec.tokens[i], via, Provider })
    c.name = `${other === undefined ? 'c' : url === dying ? 'a' : 'b'}${i}-${version}`
    c.provider.awareness.setLocalStateField('user', { name: c.name })
    c.connects = [] // when each socket opened
    c.provider.on('connection-close', () => {
      if (url === dying && other !== undefined && !spec.restart) {
        // follow the failover: the next attempt goes to the other process
        if ('serverUrl' in c.provider) c.provider.serverUrl = other
        else c.provider.url = c.provider.url.replace(dying, other)
      }
    })
    c.provider.on('status', ({ status }) => {
      if (status === 'connected') c.connects.push(Date.now())
    })
    clients.push(c)
  }
  const id = (c) => c.doc.clientID
  const sees = (o, x) => o.provider.awareness.getStates().get(id(x))?.user?.name === x.name
  const everyoneSeesEveryone = () => clients.every((o) => clients.every((x) => sees(o, x)))
  await waitFor(everyoneSeesEveryone, 10000, 'every client to see every other before the kill')
  // The clock each observer knows of each client before the kill.
  const before = new Map(clients.map((o) => [o, new Map(clients.map((x) => [x, o.provider.awareness.meta.get(id(x)).clock]))]))
  const wasClosed = new Map(clients.map((c) => [c, c.closes.length]))
  const cut = (c) => c.closes.length > wasClosed.get(c)
  const readyAt = Date.now()
  const reconnectedAt = (c) => c.connects.find((t) => t > readyAt) ?? null
  emit({ phase: 'ready' })
  // The test kills a process now: the sockets it held all close at once.
  await waitFor(() => clients.some(cut), 10000, 'a client to be cut')
  const killedAt = Date.now()
  await sleep(300)
  const moved = clients.filter(cut)
  const renewed = (o, x) => o === x || (sees(o, x) && o.provider.awareness.meta.get(id(x)).clock > before.get(o).get(x))
  const seenAt = new Map() // "o x" -> first time o saw x renewed (x moved) or present (x stayed)
  // Long enough for a restart and a reconnect on a loaded machine; a run that passes
  // ends as soon as every pair is seen.
  const deadline = killedAt + (spec.windowMs ?? 12000)
  const pairs = clients.flatMap((o) => clients.filter((x) => x !== o).map((x) => [o, x]))
  while (Date.now() < deadline) {
    const now = Date.now()
    for (const [o, x] of pairs) {
      const key = `${o.name} ${x.name}`
      const ok = moved.includes(x) ? renewed(o, x) : sees(o, x)
      if (ok && !seenAt.has(key)) seenAt.set(key, now)
      if (!ok) seenAt.delete(key) // it must stay visible
    }
    if (seenAt.size === pairs.length && moved.every((c) => reconnectedAt(c) !== null)) break
    await sleep(10)
  }
  partial.seen = seenAt.size
  const missing = pairs.map(([o, x]) => `${o.name} ${x.name}`).filter((k) => !seenAt.has(k))
  // A pair can see each other only once both are connected again: each pair is timed
  // from the later reconnect of its two (a 3.x provider's back-off after a slow restart
  // can bring it back seconds after a 1.x one, which is not the server's delay).
  const back = (o, x) => Math.max(...[o, x].filter((c) => moved.includes(c)).map(reconnectedAt))
  const after = (pairsOf) => Math.max(...pairsOf.map(([o, x]) => (seenAt.get(`${o.name} ${x.name}`) ?? Infinity) - back(o, x)))
  const others = (c) => clients.filter((o) => o !== c)
  const result = {
    reconnectedAfterMs: Object.fromEntries(moved.map((c) => [c.name, reconnectedAt(c) && reconnectedAt(c) - killedAt])),
    // how long after the pair's reconnect every peer saw it, and it saw every peer
    seenByAllAfterMs: Object.fromEntries(moved.map((x) => [x.name, after(others(x).map((o) => [o, x]))])),
    seesAllAfterMs: Object.fromEntries(moved.map((o) => [o.name, after(others(o).map((x) => [o, x]))])),
    missing
  }
  for (const c of clients) c.provider.destroy()
  return result
}, spec.hardMs ?? 40000)

// Presence after a failover, with y-websocket 1.5.4, 2.1 and 3.1. Per version, one client
// on the process that will die (spec.urls[0], "a-") and one on the other (spec.urls[1],
// "b-"), each its own user (spec.tokens, in that order). Once everyone sees everyone,
// prints {"phase":"ready"}; the test then kills the first process (kill -9) and, with
// spec.restart, starts it again on the same port (a replaced worker). Without it, the
// "a-" clients move to the other process when their socket closes.
//
// Then, for every pair (observer, client), the time at which the observer sees the client
// again as the client announced itself *after* its reconnect: its state present with a
// clock newer than the observer knew before the kill (y-protocols ignores a state whose
// clock is not newer than a removal it saw, and a state the dead process relayed is
// removed once that process is declared gone). Result: per reconnected client, how long
// after its reconnect every peer saw it, and it saw every peer.
// spec: {urls: [dying, other], tokens: [6 JWTs], room, restart, windowMs}
import { WebsocketProvider as Provider1 } from 'y-websocket-1'
import { WebsocketProvider as Provider2 } from 'y-websocket-2'
import { client, emit, main, sleep, spec, waitFor } from './lib.mjs'
import { WebsocketProvider as Provider3 } from 'y-websocket'

const versions = [['1.5.4', Provider1, 'query'], ['2.1', Provider2, 'protocol'], ['3.1', Provider3, 'protocol']]

main(async (partial) => {
  const [dying, other] = spec.urls
  const clients = []
  for (const [side, url] of [['a', dying], ['b', other]]) {
    for (const [version, Provider, via] of versions) {
      const name = `${side}-${version}`
      const c = client(url, spec.room, { token: spec.tokens[clients.length], via, Provider })
      c.name = name
      c.side = side
      c.provider.awareness.setLocalStateField('user', { name })
      c.reconnectedAt = null
      c.provider.on('connection-close', () => {
        if (side === 'a' && !spec.restart) {
          // follow the failover: the next attempt goes to the other process
          if ('serverUrl' in c.provider) c.provider.serverUrl = other
          else c.provider.url = c.provider.url.replace(dying, other)
        }
      })
      c.provider.on('status', ({ status }) => {
        if (status === 'connected' && c.killedAt != null && c.reconnectedAt === null) {
          c.reconnectedAt = Date.now()
        }
      })
      clients.push(c)
    }
  }
  const id = (c) => c.doc.clientID
  const sees = (o, x) => o.provider.awareness.getStates().get(id(x))?.user?.name === x.name
  const everyoneSeesEveryone = () => clients.every((o) => clients.every((x) => sees(o, x)))
  await waitFor(everyoneSeesEveryone, 10000, 'every client to see every other before the kill')
  // The clock each observer knows of each client before the kill.
  const before = new Map(clients.map((o) => [o, new Map(clients.map((x) => [x, o.provider.awareness.meta.get(id(x)).clock]))]))
  const wasClosed = new Map(clients.map((c) => [c, c.closes.length]))
  emit({ phase: 'ready' })
  // The test kills the dying process now: wait for its clients' sockets to close.
  await waitFor(() => clients.filter((c) => c.side === 'a').every((c) => c.closes.length > wasClosed.get(c)), 10000, 'the dying process\'s clients to be cut')
  const killedAt = Date.now()
  for (const c of clients) c.killedAt = killedAt
  const renewed = (o, x) => o === x || (sees(o, x) && o.provider.awareness.meta.get(id(x)).clock > before.get(o).get(x))
  const seenAt = new Map() // "o x" -> first time o saw x renewed (x moved) or present (x stayed)
  const deadline = killedAt + (spec.windowMs ?? 8000)
  const moved = clients.filter((c) => c.side === 'a')
  const pairs = clients.flatMap((o) => clients.filter((x) => x !== o).map((x) => [o, x]))
  while (Date.now() < deadline) {
    const now = Date.now()
    for (const [o, x] of pairs) {
      const key = `${o.name} ${x.name}`
      const ok = x.side === 'a' ? renewed(o, x) : sees(o, x)
      if (ok && !seenAt.has(key)) seenAt.set(key, now)
      if (!ok) seenAt.delete(key) // it must stay visible
    }
    if (seenAt.size === pairs.length && moved.every((c) => c.reconnectedAt !== null)) break
    await sleep(10)
  }
  partial.seen = seenAt.size
  const missing = pairs.map(([o, x]) => `${o.name} ${x.name}`).filter((k) => !seenAt.has(k))
  const after = (c, keys) => Math.max(...keys.map((k) => (seenAt.get(k) ?? Infinity) - c.reconnectedAt))
  const result = {
    reconnectedAfterMs: Object.fromEntries(moved.map((c) => [c.name, c.reconnectedAt && c.reconnectedAt - killedAt])),
    // how long after its reconnect every peer saw it, and it saw every peer
    seenByAllAfterMs: Object.fromEntries(moved.map((x) => [x.name, after(x, clients.filter((o) => o !== x).map((o) => `${o.name} ${x.name}`))])),
    seesAllAfterMs: Object.fromEntries(moved.map((o) => [o.name, after(o, clients.filter((x) => x !== o).map((x) => `${o.name} ${x.name}`))])),
    missing
  }
  for (const c of clients) c.provider.destroy()
  return result
}, spec.hardMs ?? 40000)

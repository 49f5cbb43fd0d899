// Presence after a Redis outage longer than the host TTL: each process took the other
// for dead and removed its clients' states. Four clients, y-websocket 1.5.4 and 3.1 on
// each of two processes (spec.urls), each its own user (spec.tokens). Once everyone sees
// everyone, their own 15 s renewals are stopped (what must bring them back is the
// server, not that renewal) and it prints {"phase":"ready"}; the test hangs Redis. Once
// no client sees the other process's clients it prints {"phase":"gone"}; the test lets
// Redis go on. Result: when (Date.now()) every client saw every other again.
// spec: {urls: [a, b], tokens: [4 JWTs], room}
import { WebsocketProvider as Provider1 } from 'y-websocket-1'
import { client, emit, main, spec, waitFor } from './lib.mjs'
import { WebsocketProvider as Provider3 } from 'y-websocket'

main(async () => {
  const clients = []
  for (let i = 0; i < 4; i++) {
    const [Provider, via] = i % 2 ? [Provider3, 'protocol'] : [Provider1, 'query']
    const c = client(spec.urls[i < 2 ? 0 : 1], spec.room, { token: spec.tokens[i], via, Provider })
    c.name = `${i < 2 ? 'a' : 'b'}${i}`
    c.provider.awareness.setLocalStateField('user', { name: c.name })
    clients.push(c)
  }
  const sees = (o, x) => o.provider.awareness.getStates().get(x.doc.clientID)?.user?.name === x.name
  const all = () => clients.every((o) => clients.every((x) => sees(o, x)))
  await waitFor(all, 10000, 'every client to see every other')
  for (const c of clients) clearInterval(c.provider.awareness._checkInterval)
  emit({ phase: 'ready' })
  const crossGone = () => clients.every((o) => clients.every((x) => o.name[0] === x.name[0] || !sees(o, x)))
  await waitFor(crossGone, 20000, 'each process to remove the other\'s clients')
  emit({ phase: 'gone' })
  await waitFor(all, 12000, 'every client to see every other again')
  return { backAt: Date.now(), closes: clients.map((c) => c.closes) }
}, 45000)

// Providers held open while a Python test looks at the server (tests/test_ops.py).
// spec: {url, room, tokens: [JWT per client], names?: [awareness user name per client]}
// Prints {phase: 'synced'} once every provider is synced, then obeys one JSON command
// per stdin line and answers each with a line:
//   {insert: {client: i, text: '...'}}  append to Y.Text 'content', wait for the echo
//                                       -> {phase: 'inserted', text: <client's text>}
//   {closed: {client: i, ms: N}}        wait (N ms at most) for client i's socket to close
//                                       (what its user sees: the provider's
//                                       'connection-close'), without quitting
//                                       -> {phase: 'closed', closes}
//   {quit: true}                        -> result line {phase: 'done', closes}, exit
// A server's close reaches 'connection-close' only after the closing handshake (the
// client's close frame back, the server's end of the TCP connection): a quit sent
// meanwhile finds no close yet, so a test waits with `closed` first.
import readline from 'node:readline'
import { client, confirmed, emit, main, spec, synced, waitFor } from './lib.mjs'

main(async () => {
  const clients = spec.tokens.map((token, i) => {
    const c = client(spec.url, spec.room, { token })
    const colors = ['#2563eb', '#db2777', '#16a34a', '#ea580c']
    if (spec.names) c.provider.awareness.setLocalStateField('user', { name: spec.names[i], color: colors[i % colors.length] })
    return c
  })
  await Promise.all(clients.map((c) => synced(c)))
  emit({ phase: 'synced' })
  const lines = readline.createInterface({ input: process.stdin })
  for await (const line of lines) {
    const command = JSON.parse(line)
    if (command.insert) {
      const c = clients[command.insert.client]
      const text = c.doc.getText('content')
      text.insert(text.length, command.insert.text)
      await confirmed(c, 20000)
      emit({ phase: 'inserted', text: text.toString() })
    } else if (command.closed) {
      const c = clients[command.closed.client]
      // No close in time: the closes so far all the same (the test's assertion on them
      // fails and shows them).
      await waitFor(() => c.closes.length > 0, command.closed.ms, 'a close').catch(() => null)
      emit({ phase: 'closed', closes: clients.map((c) => c.closes) })
    } else if (command.quit) {
      break
    }
  }
  const closes = clients.map((c) => c.closes)
  for (const c of clients) c.provider.destroy()
  return { phase: 'done', closes }
}, spec.hardMs ?? 60000)

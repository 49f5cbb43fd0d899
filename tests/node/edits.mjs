// One provider makes `count` separate edits, one every `intervalMs`, waits until the
// server has confirmed (echoed) every one, then disconnects.
// spec: {url, token, room, count, intervalMs}
import { client, confirmed, main, sleep, spec, synced, waitFor } from './lib.mjs'

main(async (partial) => {
  const c = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  await synced(c)
  const text = c.doc.getText('text')
  const started = Date.now()
  for (let i = 0; i < spec.count; i++) {
    text.insert(text.length, `[${i}]`)
    partial.sent = i + 1
    await sleep(spec.intervalMs ?? 0)
  }
  const editedMs = Date.now() - started
  await confirmed(c, 20000)
  c.provider.destroy()
  await waitFor(() => c.provider.wsconnected === false, 5000, 'the provider to disconnect')
  return { sent: c.trace.sentUpdates.length, editedMs, text: text.toString() }
}, spec.hardMs ?? 40000)

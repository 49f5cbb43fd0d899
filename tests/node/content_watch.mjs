// A y-websocket provider watching one text field while a backend writes it over HTTP
// without Yjs (tests/test_content_api.py). Prints {"phase":"synced", text} once synced,
// then {"phase":"changed", text, connects} at the first change that arrives.
// spec: {url, token, room, field}
import { client, emit, main, spec, synced, waitFor } from './lib.mjs'

main(async () => {
  const c = client(spec.url, spec.room, { token: spec.token })
  await synced(c)
  const text = c.doc.getText(spec.field)
  const first = text.toString()
  emit({ phase: 'synced', text: first })
  await waitFor(() => text.toString() !== first, 15000, 'a change')
  return { phase: 'changed', text: text.toString(), connects: c.trace.sockets }
})

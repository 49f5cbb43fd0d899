// A y-websocket 3.1 provider editing a rich-text field (an XML fragment, as y-prosemirror
// keeps a Tiptap document) beside a Tiptap page, on command (tests/test_history_browser.py).
// spec: {url, room, token, field}
// Prints {phase: 'synced'}, then obeys one JSON command per stdin line, answering each:
//   {state: true}        -> {phase: 'state', update: <its document, base64>, sockets}
//   {append: '...'}      appends a paragraph of that text to the field, waits for the echo
//                        -> {phase: 'appended'}
// and ends (result line {phase: 'done', sockets}) when its stdin closes.
import readline from 'node:readline'
import { client, confirmed, emit, main, spec, synced, Y } from './lib.mjs'

main(async () => {
  const c = client(spec.url, spec.room, { token: spec.token })
  await synced(c)
  const fragment = c.doc.getXmlFragment(spec.field)
  emit({ phase: 'synced' })
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const command = JSON.parse(line)
    if (command.state) {
      const update = Buffer.from(Y.encodeStateAsUpdate(c.doc)).toString('base64')
      emit({ phase: 'state', update, sockets: c.trace.sockets })
    } else if (command.append !== undefined) {
      const paragraph = new Y.XmlElement('paragraph')
      paragraph.insert(0, [new Y.XmlText(command.append)])
      fragment.insert(fragment.length, [paragraph])
      await confirmed(c)
      emit({ phase: 'appended' })
    }
  }
  c.provider.destroy()
  return { phase: 'done', sockets: c.trace.sockets }
}, spec.hardMs ?? 60000)

// Version history with real providers (tests/test_history.py).
//
// mode 'restore': A (on urls[0]) writes a formatted text, a map and an XML fragment (rich
// text as y-prosemirror keeps it); a named version is made over HTTP (apis[0]); A and B
// (on urls[1], possibly another process) edit on; the version is restored over HTTP
// (apis[restoreVia]). Both must show the version's content without reconnecting, then
// B types and A must see it: they keep editing on top of the restore.
// mode 'deleted': a provider of `version` (1, 2 or 3) writes, then waits while the test
// deletes the document; it records every close (code) and every socket it opened for
// `watchMs` after the delete, and whether anything it held was pushed back.
// spec: {mode, urls, apis, token, room, restoreVia, version, watchMs}
import { client, confirmed, emit, main, sleep, spec, synced, waitFor, Y } from './lib.mjs'

const providers = {
  1: async () => (await import('y-websocket-1')).WebsocketProvider,
  2: async () => (await import('y-websocket-2')).WebsocketProvider,
  3: async () => (await import('y-websocket')).WebsocketProvider
}

/** A delta with neighbouring runs of equal attributes merged (format markers left by
 * removed formatting split a run in Yjs' own delta without changing the content). */
function merged (delta) {
  const runs = []
  for (const op of delta) {
    const last = runs[runs.length - 1]
    if (last && typeof op.insert === 'string' && typeof last.insert === 'string' &&
        JSON.stringify(last.attributes ?? {}) === JSON.stringify(op.attributes ?? {})) {
      last.insert += op.insert
    } else runs.push({ ...op })
  }
  return runs
}

/** Everything the test compares, with the text's formatting and the XML's structure. */
function state (doc) {
  return JSON.stringify({
    text: merged(doc.getText('text').toDelta()),
    map: doc.getMap('map').toJSON(),
    xml: doc.getXmlFragment('prosemirror').toString()
  })
}

async function http (method, url, body) {
  const res = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${spec.token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const data = await res.json()
  if (res.status >= 300) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(data)}`)
  return data
}

async function restore () {
  const a = client(spec.urls[0], spec.room, { token: spec.token })
  const b = client(spec.urls[1], spec.room, { token: spec.token })
  await Promise.all([synced(a), synced(b)])
  const text = a.doc.getText('text')
  text.insert(0, 'version one', { bold: true })
  text.insert(11, ' plain')
  a.doc.getMap('map').set('title', 'v1')
  a.doc.getMap('map').set('nested', new Y.Map([['n', 1]]))
  const p = new Y.XmlElement('paragraph')
  p.insert(0, [new Y.XmlText('hello')])
  a.doc.getXmlFragment('prosemirror').insert(0, [p])
  p.get(0).format(0, 5, { bold: {} })
  await confirmed(a)
  await waitFor(() => state(b.doc) === state(a.doc), 5000, 'B has the first content')
  const version = await http('POST', `${spec.apis[0]}/versions`, { label: 'v1' })
  const wanted = state(a.doc)
  // Both edit on: text, formatting, map, XML.
  text.insert(0, 'draft: ')
  text.format(7, 3, { italic: true })
  a.doc.getMap('map').set('title', 'v2')
  a.doc.getMap('map').delete('nested')
  b.doc.getXmlFragment('prosemirror').get(0).get(0).insert(5, ' world')
  b.doc.getXmlFragment('prosemirror').insert(1, [new Y.XmlElement('heading')])
  await Promise.all([confirmed(a), confirmed(b)])
  await waitFor(() => state(b.doc) === state(a.doc), 5000, 'A and B converge on the edits')
  const edited = state(a.doc)
  const socketsBefore = [a.trace.sockets, b.trace.sockets]
  const started = Date.now()
  const answer = await http('POST', `${spec.apis[spec.restoreVia]}/versions/${version.id}/restore`)
  await waitFor(() => state(a.doc) === wanted && state(b.doc) === wanted, 5000, 'the restore')
    .catch((e) => { throw new Error(`${e.message}: wanted ${wanted}, A ${state(a.doc)}, B ${state(b.doc)}`) })
  const restoreMs = Date.now() - started
  // Editing goes on on top of it.
  b.doc.getText('text').insert(0, '!')
  await confirmed(b)
  await waitFor(() => a.doc.getText('text').toString().startsWith('!version one'), 5000, 'A sees B')
  const result = {
    version,
    answer,
    wanted,
    edited,
    restoreMs,
    a: state(a.doc),
    b: state(b.doc),
    reconnected: [a.trace.sockets - socketsBefore[0], b.trace.sockets - socketsBefore[1]]
  }
  a.provider.destroy()
  b.provider.destroy()
  return result
}

async function deleted () {
  const Provider = await providers[spec.version]()
  // y-websocket 1.x has no protocols option: its token goes in the query.
  const via = spec.version === 1 ? 'query' : 'protocol'
  const c = client(spec.urls[0], spec.room, { token: spec.token, Provider, via })
  await synced(c)
  c.doc.getText('text').insert(0, `written by ${spec.version}`)
  await confirmed(c)
  emit({ phase: 'written' })
  await waitFor(() => c.closes.length > 0, 10000, 'the close of the delete')
  const socketsAtClose = c.trace.sockets
  await sleep(spec.watchMs)
  c.doc.getText('text').insert(0, 'after delete ') // would be pushed back on a reconnect
  await sleep(300)
  const result = {
    closes: c.closes,
    reconnects: c.trace.sockets - socketsAtClose,
    text: c.doc.getText('text').toString()
  }
  c.provider.destroy()
  return result
}

main(async () => (spec.mode === 'restore' ? restore() : deleted()), spec.hardMs ?? 30000)

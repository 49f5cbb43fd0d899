// The HTTP document API against live providers. A and B edit a document (text, map,
// list, XML fragment); then, over HTTP: GET (binary) applied to a fresh Y.Doc and
// GET ?format=json must both equal what the providers hold; a POSTed update (made
// from a doc seeded with the GET, not connected anywhere) must reach both providers.
// Prints {"phase":"posted", ...} once it has, then waits for the server to go away
// (the test kills it with SIGKILL).
// spec: {url, http, token, room}
import { Y, client, confirmed, content, emit, main, sameContent, spec, synced, waitFor } from './lib.mjs'

const everything = (doc) => ({ ...content(doc), xml: doc.getXmlFragment('xml').toString() })

async function get (query = '') {
  const res = await fetch(`${spec.http}/v1/documents/${spec.room}${query}`, {
    headers: { Authorization: `Bearer ${spec.token}` }
  })
  if (res.status !== 200) throw new Error(`GET${query}: ${res.status} ${await res.text()}`)
  return res
}

main(async (partial) => {
  const a = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  const b = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  await Promise.all([synced(a), synced(b)])
  a.doc.getText('text').insert(0, 'hello from a')
  a.doc.getMap('map').set('n', 7)
  a.doc.getMap('map').set('obj', { x: [1, 2.5], y: 'z' })
  a.doc.getArray('list').push(['one', 2])
  const p = new Y.XmlElement('p')
  p.setAttribute('class', 'c')
  p.insert(0, [new Y.XmlText('hi')])
  a.doc.getXmlFragment('xml').insert(0, [p])
  b.doc.getText('text').insert(0, '[b]')
  b.doc.getMap('map').set('b', true)
  await waitFor(() => sameContent(a.doc, b.doc) && a.doc.getXmlFragment('xml').length === 1 &&
                      b.doc.getXmlFragment('xml').length === 1, 10000, 'convergence')
  await Promise.all([confirmed(a), confirmed(b)])
  const held = everything(a.doc)
  partial.held = held

  const binary = await get()
  const type = binary.headers.get('content-type')
  const state = new Uint8Array(await binary.arrayBuffer())
  const fresh = new Y.Doc()
  Y.applyUpdate(fresh, state)
  const json = await (await get('?format=json')).json()

  // An update made elsewhere, causally after what the GET returned.
  const writer = new Y.Doc()
  Y.applyUpdate(writer, state)
  const before = Y.encodeStateVector(writer)
  writer.getText('text').insert(0, '[api]')
  writer.getMap('map').set('api', 42)
  const update = Y.encodeStateAsUpdate(writer, before)
  const res = await fetch(`${spec.http}/v1/documents/${spec.room}/update`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${spec.token}`, 'Content-Type': 'application/octet-stream' },
    body: update
  })
  const posted = { status: res.status, body: await res.json() }
  await waitFor(() => a.doc.getMap('map').get('api') === 42 && b.doc.getMap('map').get('api') === 42,
    10000, 'the POSTed update to reach both providers')
  emit({ phase: 'posted', held, type, fromBinary: everything(fresh), json, posted,
         after: { a: everything(a.doc), b: everything(b.doc) } })
  await waitFor(() => a.closes.length && b.closes.length, 20000, 'the connections to drop')
  return { done: true }
}, 40000)

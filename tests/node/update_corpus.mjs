// Real Yjs v1 updates of every shape JS Yjs 13.6 writes, for tests/test_update_check.py:
// every shared type, every lib0 `any` value kind, subdocuments, formatting and embeds,
// huge client ids and clocks, delete sets of many clients and ranges, GC'd content,
// `encodeStateAsUpdate(doc, sv)` diffs (cut inside items), `mergeUpdates` (Skip
// structs), pending structs, `diffUpdate`, `obfuscateUpdate`, v2 converted to v1,
// legacy ContentJSON, y-prosemirror (y-tiptap) documents and edits, and a seeded random
// edit session between three documents. Prints one JSON line: {updates: [[kind, base64],
// ...], structs: [the struct and content classes Yjs decodes in them]}.
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import { Schema } from '@tiptap/pm/model'
import { prosemirrorJSONToYDoc, updateYFragment } from '@tiptap/y-tiptap'

const corpus = []
const add = (kind, update) => corpus.push([kind, Buffer.from(update).toString('base64')])

let seed = 20261207
const rand = () => { // mulberry32: the same corpus every run
  seed |= 0; seed = seed + 0x6D2B79F5 | 0
  let t = Math.imul(seed ^ seed >>> 15, 1 | seed)
  t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t
  return ((t ^ t >>> 14) >>> 0) / 4294967296
}
const int = (n) => Math.floor(rand() * n)
const pick = (list) => list[int(list.length)]

/** A doc whose every transaction's update is added under `kind`. */
const recorded = (kind, options = {}, clientID = null) => {
  const doc = new Y.Doc(options)
  if (clientID !== null) doc.clientID = clientID
  doc.on('update', (update) => add(kind, update))
  return doc
}

/** The whole state, and diffs against several state vectors of the doc's own history. */
const snapshots = (kind, doc, vectors = []) => {
  add(`${kind}/state`, Y.encodeStateAsUpdate(doc))
  for (const sv of vectors) add(`${kind}/since`, Y.encodeStateAsUpdate(doc, sv))
}

// --- every lib0 `any` value kind ------------------------------------------------------
const deep = (n, leaf) => (n === 0 ? leaf : (n % 2 ? [deep(n - 1, leaf)] : { [`k${n}`]: deep(n - 1, leaf) }))
const ANYS = [
  null, undefined, true, false,
  0, 1, -1, 63, 64, -63, -64, -65, 127, 128, 8191, 8192, -8192, 2 ** 31 - 1, 2 ** 31, -(2 ** 31),
  -(2 ** 31) - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 40, -(2 ** 40), 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 53, 2 ** 64,
  -0, 0.5, 1.1, 3.25, -2.5e-8, 1e300, -1e-300, 5e-324, NaN, Infinity, -Infinity, Math.PI,
  0n, 1n, -1n, 2n ** 31n, 2n ** 63n - 1n, -(2n ** 63n),
  '', 'ascii', 'é', 'ü'.repeat(70), '日本語', '😀', '𝄞x😀', '\uD800', '\uDC00', 'a\uD83Dz', '\uDE00\uD83D',
  'x'.repeat(127), 'x'.repeat(128), 'x'.repeat(20000), '\u0000nul',
  [], {}, [null, undefined, 1, 'a', [2, [3]], { a: {} }], { '': 1, '😀': '\uD800', 'a b': [true, false] },
  { undef: undefined, big: 5n, bytes: new Uint8Array([0, 255, 128]), list: [1.5, -0] },
  deep(60, 'bottom'), deep(7, [1, 2, 3]),
  Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`key${i}`, i * 1000])),
  Array.from({ length: 300 }, (_, i) => i - 150),
  new Uint8Array(0), new Uint8Array([0]), new Uint8Array(300).fill(0x80), new Uint8Array(70000).fill(7)
]

// Yjs takes undefined and bigint only inside an array or object (a map also takes undefined).
const inArray = (value) => (value === undefined || typeof value === 'bigint' ? [value] : value)
const inMap = (value) => (typeof value === 'bigint' ? { value } : value)
{
  const doc = recorded('any/array', {}, 11)
  const array = doc.getArray('a')
  for (const value of ANYS) array.push([inArray(value)]) // one ContentAny (or ContentBinary) each
  doc.transact(() => array.insert(3, ANYS.map(inArray))) // all of them in one item
  const map = doc.getMap('m')
  ANYS.forEach((value, i) => map.set(`v${i}`, inMap(value))) // with a parentSub
  map.set('', 1)
  map.set('😀\uD800', 'key with surrogates')
  snapshots('any', doc, [new Uint8Array([0])])
}

// --- Text: formatting attributes, embeds, deletions -------------------------------------
{
  const doc = recorded('text', {}, 12)
  const text = doc.getText('t')
  const sv0 = Y.encodeStateVector(doc)
  text.insert(0, 'hello world')
  text.insert(5, ' bold', { bold: true })
  text.insert(0, 'linked', { link: { href: 'https://x.test/?a=1&b=😀' }, color: '#f00', size: 12, n: null })
  text.format(2, 8, { italic: true, weird: [1, { a: null }], u: 'ü' })
  text.format(3, 4, { italic: null }) // a format removal
  text.insertEmbed(4, { image: 'https://x.test/i.png', alt: 'ä😀' })
  text.insertEmbed(0, 'a string embed')
  text.insertEmbed(1, [1, 2, { three: 3 }])
  text.insertEmbed(2, new Y.Map([['inner', 'map']])) // a shared type embedded in text
  text.insert(3, '😀𝄞 astral', { bold: true })
  text.insert(1, '\uD83D lone \uDE00', {})
  const sv1 = Y.encodeStateVector(doc)
  text.delete(2, 5)
  text.applyDelta([{ retain: 3 }, { insert: 'delta', attributes: { code: true } }, { delete: 2 }, { retain: 4, attributes: { bold: null } }])
  text.insert(text.length, 'x'.repeat(5000))
  for (let i = 0; i < 60; i++) text.delete(int(text.length - 1), 1 + int(3)) // many ranges
  snapshots('text', doc, [sv0, sv1, new Uint8Array([1, 12, 3]), new Uint8Array([1, 12, 7]), new Uint8Array([1, 99, 5])])
}

// --- Map, Array, nested types ---------------------------------------------------------
{
  const doc = recorded('nested', {}, 13)
  const map = doc.getMap('m')
  const array = doc.getArray('a')
  const inner = new Y.Map()
  map.set('inner', inner)
  inner.set('x', 1)
  inner.set('array', Y.Array.from([1, 2, new Y.Text('t in array')]))
  const list = new Y.Array()
  array.push([list, new Y.Map([['a', 1]]), new Y.Text('text'), new Y.XmlFragment(), new Y.XmlText('xt')])
  list.push([new Y.Array(), new Y.Map()])
  list.get(0).push([[1, 2], { a: 1 }])
  let level = new Y.Map()
  map.set('deep', level)
  for (let i = 0; i < 30; i++) { const next = new Y.Map(); level.set(`l${i}`, next); level = next }
  map.set('inner', 'overwritten') // the old map is deleted
  map.delete('deep')
  array.delete(1, 2)
  array.insert(1, ['back', 'in'])
  snapshots('nested', doc, [new Uint8Array([1, 13, 2])])
}

// --- XML: fragment, elements with attributes, text with formatting, hooks ----------------
{
  const doc = recorded('xml', {}, 14)
  const fragment = doc.getXmlFragment('prosemirror')
  const paragraph = new Y.XmlElement('paragraph')
  const heading = new Y.XmlElement('heading')
  fragment.insert(0, [paragraph, heading, new Y.XmlText('top text')])
  heading.setAttribute('level', 2)
  heading.setAttribute('id', 'h-😀')
  heading.setAttribute('data', { nested: [1, 2] })
  paragraph.setAttribute('class', 'c')
  const text = new Y.XmlText()
  paragraph.insert(0, [text, new Y.XmlElement('hard_break'), new Y.XmlElement('custom-élément')])
  text.insert(0, 'plain ')
  text.insert(6, 'bold', { bold: {} })
  text.insert(10, ' link', { link: { href: 'https://x.test' } })
  text.setAttribute('lang', 'fr')
  text.format(0, 3, { italic: {} })
  paragraph.removeAttribute('class')
  fragment.delete(2, 1)
  const element = doc.getXmlElement ? doc.getXmlElement('root-element') : null
  if (element) element.setAttribute('a', 'b')
  snapshots('xml', doc)

  // XmlHook: JS Yjs writes its name after the type ref (`readYXmlHook` reads it), yrs
  // does not read it (`TYPE_REFS_XML_HOOK => TypeRef::XmlHook`), so pycrdt fails on these
  // or misreads them. Valid Yjs all the same: the check must take them.
  const other = recorded('yrs-incompatible/hook', {}, 21)
  const hook = new Y.XmlHook('a-hook')
  other.getXmlFragment('x').insert(0, [new Y.XmlElement('p'), hook])
  hook.set('k', 'v')
  hook.set('n', new Y.Map([['inside', true]]))
  hook.delete('k')
  other.getXmlFragment('x').insert(2, [new Y.XmlHook('😀')])
  snapshots('yrs-incompatible/hook', other)
}

// --- subdocuments ------------------------------------------------------------------------
{
  const doc = recorded('subdoc', {}, 15)
  const subdocs = doc.getMap('subdocs')
  subdocs.set('plain', new Y.Doc())
  subdocs.set('guid', new Y.Doc({ guid: 'guid-😀-ä' }))
  subdocs.set('options', new Y.Doc({ guid: 'opts', meta: { title: 't', n: 2 ** 40, tags: ['a'] }, autoLoad: true, shouldLoad: false }))
  const sub = new Y.Doc({ guid: 'inside-array', collectionid: 'c' })
  doc.getArray('list').push([sub])
  sub.on('update', (update) => add('subdoc/inner', update))
  sub.getText('t').insert(0, 'inside a subdocument')
  subdocs.delete('plain')
  snapshots('subdoc', doc)
}

// --- huge client ids and clocks, delete sets of many clients --------------------------
{
  const ids = [0, 1, 127, 128, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 53 - 1]
  const docs = ids.map((id) => recorded('clients', {}, id))
  docs.forEach((doc, i) => doc.getText('t').insert(0, `client ${ids[i]} `.repeat(3)))
  const all = Y.mergeUpdates(docs.map((doc) => Y.encodeStateAsUpdate(doc)))
  add('clients/merged', all)
  for (const doc of docs) Y.applyUpdate(doc, all)
  const text = docs[0].getText('t')
  docs[0].transact(() => { for (let i = text.length - 2; i > 0; i -= 3) text.delete(i, 1) })
  snapshots('clients', docs[0], [Y.encodeStateVector(docs[5])])

  const big = new Y.Doc() // an item 300,000 long: clocks past 2^14 and 2^21 in varUints
  big.clientID = 2 ** 53 - 1
  big.getText('t').insert(0, 'y'.repeat(300000))
  big.getText('t').insert(150000, 'middle')
  big.getText('t').delete(1000, 200000)
  snapshots('bigclock', big, [new Uint8Array([1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x90, 0xce, 0x00])])
}

// --- clocks past 2^32, written by hand: an item at clock 2^40 (pending: what comes before it
// is missing) and a delete set reaching 2^52, both readable by Yjs; yrs wraps them to 32 bits,
// so the server refuses them (tests/test_update_check.py, READ_OTHERWISE) -------------------
{
  const crafted = encoding.encode((e) => {
    encoding.writeVarUint(e, 1) // one client
    encoding.writeVarUint(e, 2) // two structs
    encoding.writeVarUint(e, 2 ** 53 - 1) // client
    encoding.writeVarUint(e, 2 ** 40) // clock
    encoding.writeUint8(e, 4) // a string, no origin: its parent is written
    encoding.writeVarUint(e, 1) // a root type's name
    encoding.writeVarString(e, 't')
    encoding.writeVarString(e, 'far')
    encoding.writeUint8(e, 0) // a GC struct
    encoding.writeVarUint(e, 2 ** 45)
    encoding.writeVarUint(e, 2) // delete set: two clients
    for (const client of [2 ** 53 - 1, 2 ** 32 + 7]) {
      encoding.writeVarUint(e, client)
      encoding.writeVarUint(e, 2)
      for (const [clock, len] of [[2 ** 40, 1], [2 ** 52, 2 ** 20]]) {
        encoding.writeVarUint(e, clock)
        encoding.writeVarUint(e, len)
      }
    }
  })
  const doc = new Y.Doc()
  Y.applyUpdate(doc, crafted) // Yjs takes it (and holds it as pending)
  add('bigclock/crafted', crafted)
  add('bigclock/crafted-state', Y.encodeStateAsUpdate(doc))
}

// --- GC'd and deleted content -----------------------------------------------------------
for (const gc of [true, false]) {
  const doc = recorded(`gc-${gc}`, { gc }, 16)
  const array = doc.getArray('a')
  const map = new Y.Map()
  array.push([map, new Y.Text('soon gone'), 'any', new Uint8Array([1, 2]), new Y.Doc({ guid: `gone-${gc}` })])
  map.set('child', new Y.Array())
  map.get('child').push(['a', 'b', 'c'])
  map.set('text', new Y.Text('abc'))
  array.delete(0, 5) // parents gone: their children become GC structs (gc) or stay (no gc)
  doc.getText('t').insert(0, 'keep delete keep')
  doc.getText('t').delete(5, 7)
  doc.getMap('m').set('k', 1)
  doc.getMap('m').set('k', 2)
  snapshots(`gc-${gc}`, doc, [new Uint8Array([1, 16, 2]), new Uint8Array([1, 16, 9])])
}

// --- legacy ContentJSON (written by early Yjs 13) ---------------------------------------
// yrs reads one string more than the count JS Yjs writes (`while remaining >= 0` in
// ItemContent::decode), so pycrdt cannot apply these: their kind says so.
{
  const doc = new Y.Doc()
  doc.clientID = 17
  doc.getArray('a').push([1, 'two', { three: [3] }, null])
  doc.getMap('m').set('k', { v: 1 })
  doc.getArray('a').push([[undefined]]) // ContentJSON writes undefined as 'undefined'
  for (const structs of doc.store.clients.values()) {
    for (const item of structs) {
      if (item.content instanceof Y.ContentAny) item.content = new Y.ContentJSON(item.content.arr)
    }
  }
  snapshots('yrs-incompatible/json', doc, [new Uint8Array([1, 17, 2])])
}

// --- undo and redo (re-created types and subdocuments), a document from a snapshot ----------
{
  const doc = recorded('undo', { gc: false }, 22)
  const text = doc.getText('t')
  const list = doc.getArray('a')
  const undo = new Y.UndoManager([text, list], { captureTimeout: 0 })
  text.insert(0, 'undo me', { bold: true })
  list.push([new Y.Map([['k', new Y.Text('inner')]]), new Y.Doc({ guid: 'undone' }), 'x'])
  const snapshot = Y.snapshot(doc)
  text.format(0, 4, { italic: true })
  list.delete(0, 3) // undone below: Yjs re-creates the map, its text and the subdocument
  text.delete(1, 3)
  for (let i = 0; i < 4; i++) undo.undo()
  for (let i = 0; i < 2; i++) undo.redo()
  undo.undo()
  snapshots('undo', doc, [new Uint8Array([1, 22, 5])])
  add('snapshot/doc', Y.encodeStateAsUpdate(Y.createDocFromSnapshot(doc, snapshot)))
}

// --- a seeded random session between three documents -------------------------------------
const session = []
{
  const docs = [3, 2 ** 32 - 1, 2 ** 53 - 7].map((id, i) => {
    const doc = new Y.Doc({ gc: i !== 2 })
    doc.clientID = id
    doc.on('update', (update) => { add('random', update); session.push(update) })
    return doc
  })
  const values = () => pick([() => inArray(pick(ANYS.slice(0, 60))), () => new Y.Map([['r', rand()]]), () => new Y.Text('rt'), () => new Uint8Array([int(256)])])()
  for (let step = 0; step < 600; step++) {
    const doc = pick(docs)
    const text = doc.getText('t')
    const array = doc.getArray('a')
    const map = doc.getMap('m')
    const xml = doc.getXmlFragment('x')
    doc.transact(() => {
      for (let op = 0, ops = 1 + int(3); op < ops; op++) {
        switch (int(9)) {
          case 0: text.insert(int(text.length + 1), pick(['a', 'bc', '😀', 'long '.repeat(int(30))]), pick([undefined, {}, { bold: true }, { c: int(9) }])); break
          case 1: if (text.length) text.delete(int(text.length), 1 + int(5)); break
          case 2: if (text.length) text.format(int(text.length), 1 + int(4), { bold: pick([true, null]) }); break
          case 3: array.insert(int(array.length + 1), [values(), values()]); break
          case 4: if (array.length) array.delete(int(array.length), 1); break
          case 5: map.set(pick(['a', 'b', 'c', 'd']), values()); break
          case 6: map.delete(pick(['a', 'b', 'c', 'd'])); break
          case 7: xml.insert(int(xml.length + 1), [pick([() => new Y.XmlElement('p'), () => new Y.XmlText('xt')])()]); break
          case 8: if (xml.length) { const child = xml.get(int(xml.length)); if (child instanceof Y.XmlElement) child.setAttribute(pick(['a', 'b']), `${int(99)}`); else xml.delete(0, 1) } break
        }
      }
    })
    if (rand() < 0.3) { // sync two of them
      const [a, b] = [pick(docs), pick(docs)]
      Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
    }
  }
  for (const doc of docs) {
    for (const other of docs) add('random/diff', Y.encodeStateAsUpdate(doc, Y.encodeStateVector(other)))
    add('random/state', Y.encodeStateAsUpdate(doc))
    add('random/v2-to-v1', Y.convertUpdateFormatV2ToV1(Y.encodeStateAsUpdateV2(doc)))
  }
}

// --- mergeUpdates (Skip structs), pending structs, diffUpdate, obfuscateUpdate ------------
{
  const own = []
  const doc = new Y.Doc()
  doc.clientID = 18
  doc.on('update', (update) => own.push(update))
  const text = doc.getText('t')
  for (let i = 0; i < 40; i++) {
    if (i % 5 === 4) text.delete(int(text.length), 2)
    else text.insert(int(text.length + 1), `w${i} `, i % 3 ? {} : { b: true })
    if (i % 7 === 0) doc.getMap('m').set(`k${i}`, i % 2 ? new Y.Array() : i)
  }
  for (let i = 0; i < 60; i++) {
    const subset = own.filter(() => rand() < 0.3) // gaps: Skip structs where updates are missing
    add('merge/gaps', Y.mergeUpdates(subset))
    const pending = new Y.Doc()
    for (const update of subset) Y.applyUpdate(pending, update)
    add('pending/state', Y.encodeStateAsUpdate(pending)) // keeps what could not be applied
    add('pending/since', Y.encodeStateAsUpdate(pending, Y.encodeStateVector(pending)))
  }
  add('merge/all', Y.mergeUpdates(own))
  add('merge/reversed', Y.mergeUpdates([...own].reverse()))
  add('merge/one', Y.mergeUpdates([own[3]]))
  add('merge/none', Y.mergeUpdates([]))
  add('merge/session', Y.mergeUpdates(session.filter(() => rand() < 0.5)))
  add('merge/session-all', Y.mergeUpdates(session))
  const whole = Y.encodeStateAsUpdate(doc)
  for (let clock = 0; clock < 260; clock += 13) {
    const sv = encoding.encode((e) => { encoding.writeVarUint(e, 1); encoding.writeVarUint(e, 18); encoding.writeVarUint(e, clock) })
    add('diff', Y.diffUpdate(whole, sv))
    add('diff/merged', Y.diffUpdate(Y.mergeUpdates(own.slice(0, 20)), sv))
  }
  add('diff/empty-sv', Y.diffUpdate(whole, new Uint8Array([0])))
  for (const update of [whole, ...own.slice(0, 10), Y.mergeUpdates(session.slice(0, 50))]) add('obfuscate', Y.obfuscateUpdate(update))
}

// --- y-prosemirror (y-tiptap) documents and edits ------------------------------------------
{
  const schema = new Schema({
    nodes: {
      doc: { content: 'block+' },
      paragraph: { group: 'block', content: 'inline*' },
      heading: { group: 'block', content: 'inline*', attrs: { level: { default: 1 }, id: { default: null } } },
      blockquote: { group: 'block', content: 'block+' },
      bullet_list: { group: 'block', content: 'list_item+' },
      list_item: { content: 'paragraph block*', attrs: { checked: { default: false } } },
      image: { group: 'inline', inline: true, attrs: { src: {}, alt: { default: null }, width: { default: 320 } } },
      hard_break: { group: 'inline', inline: true },
      text: { group: 'inline' }
    },
    marks: {
      bold: {}, italic: {}, code: { excludes: '_' },
      link: { attrs: { href: {}, title: { default: null } } },
      comment: { attrs: { id: {} }, excludes: '' } // overlapping marks: y-prosemirror hashes their keys
    }
  })
  const t = (text, marks) => ({ type: 'text', text, ...(marks ? { marks } : {}) })
  const docs = [
    { type: 'doc', content: [{ type: 'paragraph', content: [t('Hello ')] }] },
    { type: 'doc', content: [{ type: 'heading', attrs: { level: 2, id: 'h-1' }, content: [t('Title 😀')] }, { type: 'paragraph', content: [t('Hello '), t('world', [{ type: 'bold' }])] }] },
    { type: 'doc', content: [{ type: 'heading', attrs: { level: 3 }, content: [t('Title 😀')] }, { type: 'paragraph', content: [t('Hello '), t('wor', [{ type: 'bold' }, { type: 'italic' }]), t('ld', [{ type: 'link', attrs: { href: 'https://x.test' } }]), { type: 'hard_break' }, { type: 'image', attrs: { src: 'a.png', alt: 'ä' } }] }] },
    { type: 'doc', content: [{ type: 'blockquote', content: [{ type: 'paragraph', content: [t('quoted', [{ type: 'comment', attrs: { id: 'c1' } }, { type: 'comment', attrs: { id: 'c2' } }])] }] }, { type: 'bullet_list', content: [{ type: 'list_item', attrs: { checked: true }, content: [{ type: 'paragraph', content: [t('item', [{ type: 'code' }])] }] }, { type: 'list_item', content: [{ type: 'paragraph' }] }] }] },
    { type: 'doc', content: [{ type: 'paragraph' }] }
  ]
  for (const json of docs) add('prosemirror/doc', Y.encodeStateAsUpdate(prosemirrorJSONToYDoc(schema, json)))
  const ydoc = recorded('prosemirror/edit', {}, 19)
  const fragment = ydoc.getXmlFragment('prosemirror')
  const meta = { mapping: new Map(), isOMark: new Map() }
  for (const json of [...docs, ...docs.slice(1, 4).reverse()]) updateYFragment(ydoc, fragment, schema.nodeFromJSON(json), meta)
  snapshots('prosemirror', ydoc, [new Uint8Array([1, 19, 10])])
}

// --- a large update: 1,000 structs (the timing case) ---------------------------------------
{
  const doc = new Y.Doc()
  doc.clientID = 20
  const text = doc.getText('t')
  doc.transact(() => { for (let i = 0; i < 1000; i++) text.insert(0, 'a', i % 2 ? { bold: true } : {}) })
  add('large/1000-structs', Y.encodeStateAsUpdate(doc))
}

// What the corpus holds, as Yjs itself decodes it: every struct and content class seen.
const seen = new Set()
for (const [, update] of corpus) {
  for (const struct of Y.decodeUpdate(Buffer.from(update, 'base64')).structs) {
    seen.add(struct instanceof Y.Item ? struct.content.constructor.name : struct.constructor.name)
  }
}
process.stdout.write(JSON.stringify({ updates: corpus, structs: [...seen].sort() }) + '\n')

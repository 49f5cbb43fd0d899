// The seeder and late joiners of `scripts/bench --scenarios cold cold-log restart`: how long a
// late joiner waits for a large stored document (connect start to its first sync step 2).
//
//   node yrestart.mjs --url ws://127.0.0.1:PORT --doc NAME [--token JWT]
//                     [--seed N] [--shape sessions|typing|random] [--joiners K] [--json OUT.json]
//
// --seed N: one writer sends N small Y.Text inserts as y-websocket update messages, at most
//   WINDOW unconfirmed at a time, and waits until the server has echoed all of them (wsserver
//   echoes an update once it is durable; the reference echoes every update).
//   --shape sessions (the default): 23 characters appended each time (about 40 B), a new
//   session every SESSION updates (see below): typing at the end of a document.
//   --shape typing: one character a time, as an editor's provider sends keystrokes: appended,
//   1 in 20 inserted at a pseudo-random place, 1 in 30 a pseudo-random character deleted;
//   sessions as above (about 20 B an update; 100,000 make about 92,000 characters).
//   --shape random: 10 characters inserted at a pseudo-random position (a fixed sequence),
//   as one provider: 100,000 of them make a document of one million characters whose
//   snapshot is about 4.2 MB (about 200,000 items: every insert splits one), the shape of
//   an edited rather than typed document.
// --joiners K: K late joiners in a row, each a fresh connection that sends an empty sync step 1
//   and is timed from connect start to the first sync step 2; its content is checked (the
//   document's text length must be what the seeder wrote). The first joiner after a restart
//   is the cold load; the later ones find the document loaded.
// With both, the writer stays connected while the joiners run (a server that keeps nothing,
// like @y/websocket-server, drops a document when its last client leaves). Output: one JSON
// object (also written to --json).
//
// It imports yjs, ws and lib0 from the ybench copy that scripts/bench installs (it is copied
// there to run).

import { writeFileSync } from 'node:fs'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

const MSG_SYNC = 0
const STEP1 = 0
const STEP2 = 1
const UPDATE = 2
const WINDOW = 2000 // unconfirmed updates in flight: bounded, like a busy editor's provider
const CHUNK = 'abcdefghijklmnopqrstuvw' // 23 characters: a Y.Text insert of about 40 B
// Yjs merges one client's consecutive inserts into one item and encodes each new insert by
// slicing that item's string: quadratic over 100,000 inserts. So the writer starts a new
// session (a new client id holding the document) every SESSION updates: a document typed
// in many sessions, each session's text one item.
const SESSION = 1000

const args = {}
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
}
if (!args.url || !args.doc) {
  console.error('usage: node yrestart.mjs --url URL --doc NAME [--token JWT] [--seed N] [--joiners K] [--json OUT]')
  process.exit(2)
}

const open = () => new Promise((resolve, reject) => {
  const url = args.url.replace(/\/+$/, '') + '/' + encodeURIComponent(args.doc)
  const protocols = args.token ? ['access_token', args.token] : undefined
  const ws = new WebSocket(url, protocols, { perMessageDeflate: false })
  ws.binaryType = 'nodebuffer'
  ws.once('open', () => resolve(ws))
  ws.once('error', reject)
  ws.once('close', (code) => reject(new Error('closed ' + code)))
})

const message = (subtype, payload) => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_SYNC)
  encoding.writeVarUint(e, subtype)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}

const syncSubtype = (buf) => {
  const d = decoding.createDecoder(buf)
  if (decoding.readVarUint(d) !== MSG_SYNC) return [null, null]
  return [decoding.readVarUint(d), d]
}

// A fixed pseudo-random sequence in [0, 1) (an LCG): every run seeds the same document.
let lcg = 1
const random = () => { lcg = (lcg * 1103515245 + 12345) & 0x7fffffff; return lcg / 0x7fffffff }

// One keystroke of --shape typing.
const type = (text) => {
  const r = random()
  if (r < 1 / 30 && text.length > 10) text.delete(Math.floor(random() * (text.length - 1)), 1)
  else if (r < 1 / 30 + 1 / 20) text.insert(Math.floor(random() * (text.length + 1)), 'x')
  else text.insert(text.length, 'y')
}

const seed = async (n, shape) => {
  const ws = await open()
  let doc = new Y.Doc()
  let text = doc.getText('t')
  let echoed = 0
  let bytes = 0
  let wake = null
  ws.on('message', (buf) => {
    const [subtype] = syncSubtype(buf)
    if (subtype === UPDATE) { echoed++; if (wake) wake() }
  })
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    while (i - echoed >= WINDOW) await new Promise((resolve) => { wake = resolve })
    if (shape !== 'random' && i && i % SESSION === 0) {
      const next = new Y.Doc()
      Y.applyUpdate(next, Y.encodeStateAsUpdate(doc))
      doc = next
      text = doc.getText('t')
    }
    let update
    doc.once('update', (u) => { update = u })
    if (shape === 'random') text.insert(Math.floor(random() * (text.length + 1)), CHUNK.slice(0, 10))
    else if (shape === 'typing') type(text)
    else text.insert(text.length, CHUNK)
    bytes += update.length
    ws.send(message(UPDATE, update))
  }
  while (echoed < n) await new Promise((resolve) => { wake = resolve })
  wake = null
  return { ws, shape, updates: n, updateBytes: bytes, textLength: text.length, seedMs: Math.round(performance.now() - t0) }
}

const join = () => new Promise((resolve, reject) => {
  const t0 = performance.now()
  open().then((ws) => {
    ws.on('message', (buf) => {
      const [subtype, d] = syncSubtype(buf)
      if (subtype !== STEP2) return
      const ms = performance.now() - t0
      const doc = new Y.Doc()
      Y.applyUpdate(doc, decoding.readVarUint8Array(d))
      ws.close()
      resolve({ ms: Math.round(ms * 10) / 10, step2Bytes: buf.length, textLength: doc.getText('t').length })
    })
    ws.send(message(STEP1, Y.encodeStateVector(new Y.Doc())))
  }, reject)
})

const report = {}
let writer = null
if (args.seed) {
  const s = await seed(Number(args.seed), args.shape || 'sessions')
  writer = s.ws
  delete s.ws
  report.seed = s
}
if (args.joiners) {
  report.joiners = []
  for (let i = 0; i < Number(args.joiners); i++) report.joiners.push(await join())
}
if (writer) writer.close()
const out = JSON.stringify(report)
if (args.json) writeFileSync(args.json, out)
console.log(out)
setTimeout(() => process.exit(0), 100) // do not wait for close handshakes

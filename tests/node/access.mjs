// How a read-only client's app learns it (tests/test_access.py, issue 22 item 4).
//
// The server sends a read-only connection one auth message (type 2) of subtype 2 with
// the access ("read") before it answers the client's sync step 1, so the app knows by the
// provider's first 'sync'. y-protocols/auth ignores subtypes other than 0, so providers
// that do not look for it are unaffected.
//   R: read-only, with the README's handler (messageHandlers[2]) recording the access
//   D: read-only, default handlers: must sync and log nothing (console is recorded)
//   W: write token, with the same handler: must receive no access message
// spec: {url, room, readToken, writeToken}
import * as decoding from 'lib0/decoding'
import { client, main, spec, synced, waitFor } from './lib.mjs'

const logged = []
for (const level of ['log', 'warn', 'error']) {
  console[level] = (...args) => logged.push(`${level}: ${args.map(String).join(' ')}`)
}

/** The README's handler: record the server's access message, pass on anything else. */
function learnAccess (c) {
  c.access = []
  const handleAuth = c.provider.messageHandlers[2]
  c.provider.messageHandlers[2] = (encoder, decoder, provider, emitSynced, type) => {
    const peek = decoding.clone(decoder)
    if (decoding.readVarUint(peek) === 2) {
      c.access.push({ access: decoding.readVarString(peek), synced: provider.synced })
    } else {
      handleAuth(encoder, decoder, provider, emitSynced, type)
    }
  }
}

main(async () => {
  const r = client(spec.url, spec.room, { token: spec.readToken, connect: false })
  const w = client(spec.url, spec.room, { token: spec.writeToken, connect: false })
  learnAccess(r)
  learnAccess(w)
  const d = client(spec.url, spec.room, { token: spec.readToken })
  r.provider.connect()
  w.provider.connect()
  await Promise.all([synced(r), synced(w), synced(d)])
  w.doc.getText('text').insert(0, 'hello')
  const seen = (c) => c.doc.getText('text').toString() === 'hello'
  await waitFor(() => seen(r) && seen(d), 5000, 'the viewers to see the edit')
  for (const c of [r, w, d]) c.provider.destroy()
  return {
    readerAccess: r.access,
    writerAccess: w.access,
    closes: [r, w, d].map((c) => c.closes.filter((x) => x && x.code !== 1000)),
    logged
  }
})

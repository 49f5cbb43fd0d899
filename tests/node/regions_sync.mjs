// Real y-websocket providers across region nodes, following 4009 redirects.
//
// usage: node regions_sync.mjs '<json spec>'
//   spec = {doc, token, urls: [serverUrl, ...], timeoutMs?}
//
// Opens one provider per url, one after the other (each waits for its sync before the
// next starts, so the first one makes the document live where it connects). Every
// provider follows `REDIRECT:` close reasons by setting `provider.serverUrl` in its
// `connection-close` handler, exactly as docs/regions.md shows. Once all are synced,
// provider i appends "[<run>.i]" to the Y.Text "t"; the script waits until every provider
// holds every tag (tags carry a random run id, so text left by earlier runs cannot
// satisfy the wait), then prints one JSON line:
//   {initialText, tags, texts, finalUrls, closes: [[{code, reason}, ...], ...]}
// initialText is what the first provider saw after its sync, before any edit of this
// run: it proves that content survived earlier moves between regions.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const spec = JSON.parse(process.argv[2])
const timeoutMs = spec.timeoutMs ?? 20000
const deadline = Date.now() + timeoutMs

const fail = (message) => {
  console.log(JSON.stringify({ error: message }))
  process.exit(1)
}
setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs).unref()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const waitFor = async (predicate, what) => {
  while (!predicate()) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

const providers = []
const closes = []
let initialText = null
for (const [i, serverUrl] of spec.urls.entries()) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(serverUrl, spec.doc, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    params: { token: spec.token }
  })
  closes.push([])
  provider.on('connection-close', (event) => {
    if (!event) return
    closes[i].push({ code: event.code, reason: event.reason })
    // The redirect: close code 4009, reason "REDIRECT:<base url>/<document name>", or
    // "REDIRECT:<base url>" alone when that would not fit a close frame (long names).
    if (event.code === 4009 && event.reason.startsWith('REDIRECT:')) {
      const target = event.reason.slice('REDIRECT:'.length)
      const suffix = '/' + provider.roomname
      provider.serverUrl = target.endsWith(suffix) ? target.slice(0, -suffix.length) : target
    }
  })
  providers.push(provider)
  await waitFor(() => provider.synced, `provider ${i} to sync`)
  if (i === 0) initialText = doc.getText('t').toString()
}

const run = Math.random().toString(36).slice(2, 8)
const tags = providers.map((_, i) => `[${run}.${i}]`)
providers.forEach((p, i) => p.doc.getText('t').insert(p.doc.getText('t').length, tags[i]))
await waitFor(() => providers.every((p) => tags.every((tag) => p.doc.getText('t').toString().includes(tag))),
  'every provider to see every edit')
const texts = providers.map((p) => p.doc.getText('t').toString())
// Let the last echoes (confirmation that the updates are durable) arrive before leaving.
await sleep(200)
const finalUrls = providers.map((p) => p.serverUrl)
providers.forEach((p) => p.destroy())
await sleep(100)
console.log(JSON.stringify({ initialText, tags, texts, finalUrls, closes }))
process.exit(0)

// A provider sending an update over the server's max_message_size is closed with 1009
// (seen by its `connection-close`); the other provider of the document carries on and
// the document is unchanged.
// spec: {url, token, room, size}
import { client, confirmed, content, main, sleep, spec, synced, waitFor } from './lib.mjs'

main(async () => {
  const big = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  const other = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  await Promise.all([synced(big), synced(other)])
  other.doc.getText('text').insert(0, 'small')
  await confirmed(other)
  await waitFor(() => big.doc.getText('text').toString() === 'small', 5000, 'the small edit')
  big.doc.getText('text').insert(0, 'x'.repeat(spec.size))
  await waitFor(() => big.closes.length > 0, 5000, 'the oversize sender to be closed')
  // The other provider is still served: a new edit goes round trip.
  other.doc.getMap('map').set('after', true)
  await confirmed(other)
  await sleep(100)
  const reader = client(spec.url, spec.room, { token: spec.token, reconnect: false })
  await synced(reader)
  return {
    bigClose: big.closes[0],
    otherCloses: other.closes,
    otherConnected: other.provider.wsconnected,
    other: content(other.doc),
    reader: content(reader.doc)
  }
})

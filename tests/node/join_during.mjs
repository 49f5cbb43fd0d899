// Catch-up without gaps: a process loads a document while another process's client is
// writing to it. For each of spec.rooms documents, writer W (spec.writerUrl) sets map
// keys every millisecond or so for spec.writeMs; joiner J (spec.joinerUrl) opens the document part way
// through, so the joiner's process reads the store in the middle of the stream. Once W's
// every update is echoed, J must hold every key.
// spec: {writerUrl, joinerUrl, token, rooms: [names], writeMs}
import { client, confirmed, main, sleep, spec, synced, waitFor } from './lib.mjs'

async function one (name, i) {
  const w = client(spec.writerUrl, name, { token: spec.token })
  await synced(w)
  const map = w.doc.getMap('map')
  let n = 0
  let j = null
  let atJoin = null // keys written when the joiner opened: it came mid-stream if 0 < atJoin < n
  const end = Date.now() + spec.writeMs
  const joinAt = Date.now() + 200 + 60 * i // staggered, all well inside the writing
  while (Date.now() < end) {
    map.set(`k${n}`, n)
    n++
    if (j === null && Date.now() >= joinAt) {
      j = client(spec.joinerUrl, name, { token: spec.token })
      atJoin = n
    }
    await sleep(1)
  }
  await confirmed(w, 10000)
  await synced(j)
  const has = () => Array.from({ length: n }, (_, k) => `k${k}`).filter((k) => !j.doc.getMap('map').has(k))
  try {
    await waitFor(() => has().length === 0, 5000, `the joiner of ${name} to hold every key`)
  } catch (e) {
    return { name, written: n, atJoin, missing: has() }
  }
  return { name, written: n, atJoin, missing: [] }
}

main(async () => {
  const results = await Promise.all(spec.rooms.map((name, i) => one(name, i)))
  return { results }
}, spec.hardMs ?? 60000)

// The admin console (admin.html): every panel reads /admin/api/* with the admin token.
// Whatever a client sent (names, awareness states, content) is shown as text, never
// as HTML, and never through the value's own `toString`.
'use strict'
const KEY = 'wsserver.admin.token'
const $ = (id) => document.getElementById(id)
let token = sessionStorage.getItem(KEY)
let me = { name: '', role: 'viewer' }
let tab = 'documents'
let live = []            // the live documents (connections, users), merged into the list
let stored = []          // the stored page(s) of the current search
let storedCursor = null
let selected = null      // {tenant, app, name}
let stream = null        // AbortController of the open event stream
let timer = null
let auditCursor = null
let charts = null

function el (tag, props = {}, ...children) {
  const node = document.createElement(tag)
  Object.assign(node, props)
  for (const child of children) node.append(child)
  return node
}

const text = (value) => typeof value === 'string' ? value : value === undefined ? '' : JSON.stringify(value)
const clip = (s, n) => s.length > n ? s.slice(0, n) + '…' : s
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)
const own = (object, key) => isObject(object) && Object.hasOwn(object, key) ? object[key] : undefined
const path = (d) => [d.tenant, d.app, d.name].map(encodeURIComponent).join('/')
const same = (a, b) => a && b && a.tenant === b.tenant && a.app === b.app && a.name === b.name
const keyOf = (d) => d.tenant + '/' + d.app + '/' + d.name

// Times: always with the date and the time zone (the API gives ISO 8601 in UTC).
// The year only when it is not this one.
const FORMAT = { month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' }
const DATE = new Intl.DateTimeFormat(undefined, FORMAT)
const DATE_YEAR = new Intl.DateTimeFormat(undefined, { ...FORMAT, year: 'numeric' })
function when (iso) {
  if (!iso) return '—'
  const date = new Date(iso)
  return (date.getFullYear() === new Date().getFullYear() ? DATE : DATE_YEAR).format(date)
}
function ago (iso) {
  if (!iso) return ''
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : s < 86400 ? Math.round(s / 3600) + ' h ago' : Math.round(s / 86400) + ' d ago'
}
const timeCell = (iso) => el('td', { className: 'sub', textContent: when(iso), title: ago(iso) })
// One size format everywhere, from one figure (the store's size of the document).
const bytes = (n) => n === null || n === undefined ? '—' : n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KB' : n < 1073741824 ? (n / 1048576).toFixed(1) + ' MB' : (n / 1073741824).toFixed(2) + ' GB'
const duration = (s) => s < 60 ? Math.round(s) + ' s' : s < 3600 ? Math.round(s / 60) + ' min' : s < 86400 ? (s / 3600).toFixed(1) + ' h' : (s / 86400).toFixed(1) + ' d'

async function api (url, options = {}) {
  const response = await fetch(url, { ...options, headers: { Authorization: 'Bearer ' + token, ...(options.body ? { 'Content-Type': 'application/json' } : {}) } })
  if (response.status === 401 || (response.status === 403 && !(options.method && options.method !== 'GET'))) {
    logout('That token was refused.'); throw new Error('refused')
  }
  if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || response.statusText)
  return response
}
const getJSON = async (url) => (await api(url)).json()

function showLogin (message = '') {
  $('console').hidden = true; $('logout').hidden = true; $('tabs').hidden = true; $('login').hidden = false
  $('login-error').textContent = message; $('status').textContent = ''; $('whoami').textContent = ''
}

function logout (message) {
  sessionStorage.removeItem(KEY); token = null
  clearInterval(timer); if (stream) stream.abort()
  showLogin(message)
}

function status (message) { $('status').textContent = message }
const failed = (what) => (e) => { if (e.message !== 'refused') status(what + ' failed: ' + e.message) }

// --- documents ------------------------------------------------------------------------

function searchURL (cursor) {
  const q = $('search').value.trim()
  let url = '/admin/api/documents?stored=1&limit=50&q=' + encodeURIComponent(q)
  if (cursor) url += '&cursor=' + encodeURIComponent(cursor)
  return url
}

async function refreshDocuments (more = false) {
  try {
    live = (await getJSON('/admin/api/documents')).documents
    if ($('stored').checked) {
      const page = await getJSON(searchURL(more ? storedCursor : null))
      stored = more ? stored.concat(page.documents) : page.documents
      storedCursor = page.cursor
    } else { stored = []; storedCursor = null }
    status('updated ' + DATE.format(new Date()))
    renderDocuments()
  } catch (e) { failed('list')(e) }
}

// The API's search, here too: a name prefix, `tenant/name prefix` or
// `tenant/app/name prefix`.
function matches (d, q) {
  const parts = q ? q.split('/') : []
  if (parts.length >= 3) return d.tenant === parts[0] && d.app === parts[1] && d.name.startsWith(parts.slice(2).join('/'))
  if (parts.length === 2) return d.tenant === parts[0] && d.name.startsWith(parts[1])
  return !q || d.name.startsWith(q)
}

function renderDocuments () {
  const q = $('search').value.trim()
  const byKey = new Map()
  for (const d of stored.filter((d) => matches(d, q))) byKey.set(keyOf(d), { ...d, connections: 0, users: [] })
  for (const d of live.filter((d) => matches(d, q))) {
    const row = byKey.get(keyOf(d)) || {}
    byKey.set(keyOf(d), { ...row, ...d, live: true, size: d.size, updated_at: d.updated_at || row.updated_at })
  }
  const shown = [...byKey.values()].sort((a, b) => (b.connections - a.connections) || keyOf(a).localeCompare(keyOf(b)))
  $('doc-count').textContent = shown.length + (storedCursor ? '+' : '')
  $('no-documents').hidden = shown.length > 0
  $('more-documents').hidden = !storedCursor
  $('documents').replaceChildren(...shown.map((d) => {
    const row = el('tr', { className: same(d, selected) ? 'selected' : '' },
      el('td', {}, el('div', { className: 'name', textContent: d.name },
        el('span', { className: 'badge ' + (d.deleted_at ? 'bad' : d.live ? 'on' : 'off'), textContent: d.deleted_at ? 'in the trash' : d.live ? 'live' : 'stored' })),
      el('div', { className: 'sub', textContent: d.tenant + ' / ' + d.app })),
      el('td', { className: 'num', textContent: d.connections }),
      el('td', { className: 'num', textContent: d.users.length }),
      el('td', { className: 'num', textContent: bytes(d.size) }),
      timeCell(d.updated_at))
    row.dataset.name = d.name
    row.addEventListener('click', () => open(d))
    return row
  }))
}

function renderDetail (d) {
  const box = $('detail')
  if (d.deleted) { box.replaceChildren(el('div', { className: 'empty', textContent: 'This document was deleted.' })); return }
  // A presence state is whatever JSON its client sent: only a string `user.color` that is
  // a CSS color is used as one, and the name is shown as text (clipped; the whole state
  // in the tooltip).
  const people = Object.entries(d.awareness).map(([id, state]) => {
    const user = own(state, 'user')
    const name = own(user, 'name')
    const color = own(user, 'color')
    const dot = el('span', { className: 'dot' })
    if (typeof color === 'string' && CSS.supports('color', color)) dot.style.backgroundColor = color
    const label = name === undefined || name === null || name === '' ? 'client ' + id : text(name)
    const chip = el('span', { className: 'person', title: clip(text(state), 2000) }, dot, clip(label, 120))
    chip.dataset.client = id
    return chip
  })
  const roots = Object.entries(d.content || {}).map(([name, value]) => {
    const kind = value === null ? 'empty' : typeof value === 'string' ? 'text' : Array.isArray(value) ? 'array' : 'map'
    return el('div', { className: 'root' },
      el('div', { className: 'label' }, el('b', { textContent: name }), kind),
      el('pre', { className: 'content', textContent: typeof value === 'string' ? value : JSON.stringify(value, null, 2) }))
  })
  if (d.content_error) roots.push(el('div', { className: 'error', textContent: 'Content not shown: ' + text(d.content_error) }))
  box.replaceChildren(
    el('h3', { textContent: d.name }),
    el('div', { className: 'sub', textContent: d.tenant + ' / ' + d.app }),
    el('div', { className: 'meta' },
      el('div', {}, el('b', { textContent: d.connections }), 'connections'),
      el('div', {}, el('b', { textContent: d.users.length }), 'users'),
      el('div', {}, el('b', { textContent: bytes(d.bytes) }), 'stored'),
      el('div', { title: ago(d.updated) }, el('b', { textContent: when(d.updated) }), 'last change')),
    el('div', { className: 'sub', textContent: 'Present' + (d.users.length ? ' (' + d.users.map(text).join(', ') + ')' : '') }),
    el('div', { className: 'people' }, ...(people.length ? people : [el('span', { className: 'sub', textContent: 'nobody' })])),
    el('h4', { textContent: 'Connections' }),
    el('div', { id: 'doc-connections' }),
    el('div', { id: 'doc-versions' }),
    el('h4', { textContent: 'Content' }),
    ...(roots.length ? roots : [el('div', { className: 'empty', textContent: 'The document is empty.' })]))
  refreshDocConnections(d)
  refreshVersions(d)
}

// --- history: versions of the open document, the trash (once the server has them) ------

let versionsShown = null  // signature of the versions list drawn, so a redraw is only on change
let versionsAsked = 0  // the latest request: an older answer (the periodic refresh's, sent
// before a save) must not draw over a newer one

async function refreshVersions (d) {
  const box = $('doc-versions')
  if (!box) return
  const asked = ++versionsAsked
  let list
  try {
    const response = await fetch('/admin/api/documents/' + path(d) + '/versions', { headers: { Authorization: 'Bearer ' + token } })
    if (asked !== versionsAsked || !same(d, selected)) return
    if (response.status === 404) { box.replaceChildren(); return } // no history here
    if (!response.ok) throw new Error(response.statusText)
    list = (await response.json()).versions
  } catch (e) { failed('versions')(e); return }
  // Drawn only for the document open now (a save's refresh can come back after
  // another row was clicked).
  if (asked !== versionsAsked || !same(d, selected)) return
  const signature = keyOf(d) + JSON.stringify(list)
  if (versionsShown === signature && box.children.length) return
  versionsShown = signature
  const save = el('button', { className: 'more', textContent: 'Save a version', hidden: me.role !== 'operator' })
  save.addEventListener('click', async () => {
    const label = prompt('Label of the new version (optional)') ?? null
    if (label === null) return
    try { await api('/admin/api/documents/' + path(d) + '/versions', { method: 'POST', body: JSON.stringify({ label }) }) } catch (e) { alert('Failed: ' + e.message) }
    versionsShown = null; refreshVersions(d)
  })
  box.replaceChildren(el('h4', { textContent: 'Versions' }),
    list.length ? el('table', { id: 'versions' }, el('tbody', {}, ...list.map((v) => versionRow(d, v)))) : el('div', { className: 'sub', textContent: 'none yet' }),
    save)
}

function versionRow (d, v) {
  const preview = el('button', { className: 'more', textContent: 'Preview' })
  preview.addEventListener('click', async () => {
    try {
      const body = await getJSON('/admin/api/documents/' + path(d) + '/versions/' + v.id)
      $('preview-title').textContent = d.name + ' · ' + when(v.created_at) + (v.label ? ' · ' + text(v.label) : '')
      $('preview-content').textContent = JSON.stringify(body.content, null, 2)
      $('preview-restore').hidden = me.role !== 'operator'
      $('preview-restore').onclick = () => restore(d, v)
      $('preview-dialog').showModal()
    } catch (e) { failed('preview')(e) }
  })
  const row = el('tr', {}, timeCell(v.created_at),
    el('td', { textContent: v.label ? text(v.label) : '—' }),
    el('td', { className: 'sub', textContent: (v.authors || []).map(text).join(', ') }),
    el('td', { className: 'num', textContent: bytes(v.size) }),
    el('td', {}, preview))
  row.dataset.version = v.id
  return row
}

async function restore (d, v) {
  if (!confirm(`Restore ${d.name} to the version of ${when(v.created_at)}? Everyone editing it sees the change.`)) return
  try {
    await api('/admin/api/documents/' + path(d) + '/versions/' + v.id + '/restore', { method: 'POST' })
    status('restored ' + d.name)
    $('preview-dialog').close()
  } catch (e) { alert('Restore failed: ' + e.message) }
}

async function refreshTrash () {
  try {
    const list = (await getJSON('/admin/api/trash')).trash
    $('no-trash').hidden = list.length > 0
    $('trash').replaceChildren(...list.map((t) => {
      const actions = []
      if (me.role === 'operator') {
        for (const [label, method, suffix, ask] of [['Undelete', 'POST', 'undelete', null], ['Purge', 'DELETE', 'purge', 'Purge ' + keyOf(t) + ' for good, versions too?']]) {
          const button = el('button', { className: label === 'Purge' ? 'danger' : 'more', textContent: label })
          button.addEventListener('click', async () => {
            if (ask && !confirm(ask)) return
            try { await api('/admin/api/documents/' + path(t) + '/' + suffix, { method }) } catch (e) { alert(label + ' failed: ' + e.message) }
            refreshTrash()
          })
          actions.push(button)
        }
      }
      const row = el('tr', {}, el('td', {}, el('div', { className: 'name', textContent: t.name }), el('div', { className: 'sub', textContent: t.tenant + ' / ' + t.app })),
        timeCell(t.deleted_at), timeCell(t.purge_at), el('td', {}, ...actions))
      row.dataset.name = t.name
      return row
    }))
  } catch (e) { failed('trash')(e) }
}

async function refreshDocConnections (d) {
  try {
    const q = new URLSearchParams({ tenant: d.tenant, app: d.app, doc: d.name })
    const list = (await getJSON('/admin/api/connections?' + q)).connections
    const box = $('doc-connections')
    if (box) box.replaceChildren(list.length ? connectionTable(list, false) : el('div', { className: 'sub', textContent: 'none' }))
  } catch (e) { failed('connections')(e) }
}

// The open document's newest figures go into its list row too: the list (polled) and
// the inspector (streamed) never show two sizes of one document at once.
function freshen (d) {
  if (d.deleted || d.error) return
  const fresh = { ...d, size: d.bytes, updated_at: d.updated_at, live: d.connections > 0 }
  for (const list of [live, stored]) {
    const i = list.findIndex((x) => same(x, d))
    if (i >= 0) list[i] = { ...list[i], ...fresh, live: list === live || fresh.live }
  }
  renderDocuments()
}

function show (d) {
  try {
    freshen(d)
    renderDetail(d)
  } catch (e) {
    console.error(e)
    $('detail').replaceChildren(el('div', { className: 'error', textContent: 'This document could not be shown: ' + e.message }))
  }
}

async function open (d) {
  selected = { tenant: d.tenant, app: d.app, name: d.name }
  renderDocuments()
  // The previous document's panel goes at once, not when this one's first event comes:
  // its buttons (save a version, preview and restore, disconnect) act on that document.
  $('detail').replaceChildren(el('div', { className: 'empty', textContent: 'Opening ' + d.name + '…' }))
  $('delete').hidden = me.role !== 'operator'
  if (stream) stream.abort()
  const controller = stream = new AbortController()
  const state = $('stream-state')
  try {
    const response = await fetch('/admin/api/documents/' + path(selected) + '/events',
      { headers: { Authorization: 'Bearer ' + token }, signal: controller.signal })
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || response.statusText)
    state.className = 'live'; state.textContent = 'live'
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
    let buffer = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        if (stream !== controller) return // another document was opened meanwhile
        const event = buffer.slice(0, end); buffer = buffer.slice(end + 2)
        const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')
        if (data) show(JSON.parse(data))
      }
    }
    state.className = 'stale'; state.textContent = 'stream ended'
  } catch (e) {
    if (controller.signal.aborted) return
    state.className = 'stale'; state.textContent = e.message
  }
}

$('delete').addEventListener('click', async () => {
  if (!selected || !confirm(`Delete ${selected.tenant}/${selected.app}/${selected.name}? Its clients are disconnected and it moves to the trash (undelete it there until it is purged).`)) return
  try { await api('/admin/api/documents/' + path(selected), { method: 'DELETE' }) } catch (e) { alert('Delete failed: ' + e.message) }
  refreshDocuments()
})

// --- connections ----------------------------------------------------------------------

function connectionTable (list, withDoc = true) {
  const head = ['Connection', ...(withDoc ? ['Document'] : []), 'User', 'IP', 'Access', 'Since', 'Msgs in', 'Bytes in', 'Msgs out', 'Bytes out', '']
  return el('table', {}, el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { textContent: h, className: h.startsWith('Msgs') || h.startsWith('Bytes') ? 'num' : '' })))),
    el('tbody', {}, ...list.map((c) => connectionRow(c, withDoc))))
}

function connectionRow (c, withDoc = true) {
  const row = el('tr', {},
    el('td', {}, el('div', { className: 'mono', textContent: c.id }), el('div', { className: 'sub', textContent: c.process })),
    ...(withDoc ? [el('td', {}, el('div', { textContent: c.doc || '—' }), el('div', { className: 'sub', textContent: c.tenant + ' / ' + c.app }))] : []),
    el('td', { textContent: c.user === null ? '—' : text(c.user) }),
    el('td', { className: 'mono', textContent: c.ip }),
    el('td', {}, el('span', { className: 'badge ' + (c.access === 'write' ? 'on' : 'off'), textContent: c.access })),
    timeCell(c.since),
    el('td', { className: 'num', textContent: c.messages_in }),
    el('td', { className: 'num', textContent: bytes(c.bytes_in) }),
    el('td', { className: 'num', textContent: c.messages_out }),
    el('td', { className: 'num', textContent: bytes(c.bytes_out) }),
    el('td', {}, ...(me.role === 'operator' ? [disconnectButton(c)] : [])))
  row.dataset.conn = c.id
  return row
}

function disconnectButton (c) {
  const button = el('button', { className: 'danger', textContent: 'Disconnect' })
  button.addEventListener('click', () => {
    $('disconnect-what').textContent = c.id + (c.user ? ' (' + text(c.user) + ')' : '')
    const dialog = $('disconnect-dialog')
    dialog.onclose = async () => {
      if (dialog.returnValue !== 'ok') return
      const q = new URLSearchParams({ code: $('disconnect-code').value, reason: $('disconnect-reason').value })
      try {
        await api('/admin/api/connections/' + encodeURIComponent(c.id) + '?' + q, { method: 'DELETE' })
        status('disconnected ' + c.id)
      } catch (e) { alert('Disconnect failed: ' + e.message) }
      refresh()
    }
    dialog.returnValue = ''
    dialog.showModal()
  })
  return button
}

async function refreshConnections () {
  const q = new URLSearchParams()
  for (const f of ['tenant', 'app', 'doc', 'user', 'ip']) { const v = $('f-' + f).value.trim(); if (v) q.set(f, v) }
  try {
    const list = (await getJSON('/admin/api/connections?' + q)).connections
    $('conn-count').textContent = list.length
    $('no-connections').hidden = list.length > 0
    $('connections').replaceChildren(...list.map((c) => connectionRow(c)))
  } catch (e) { failed('connections')(e) }
}

// --- processes, tenants, audit -----------------------------------------------------------

const stateBadge = (value) => el('span', { className: 'badge ' + (value === 'ok' || value === 'up' || value === true ? 'on' : value === 'off' || value === null || value === undefined ? 'off' : 'bad'), textContent: value === true ? 'ready' : value === false ? 'not ready' : text(value ?? '—') })

async function refreshProcesses () {
  try {
    const list = (await getJSON('/admin/api/processes')).processes
    $('proc-count').textContent = list.length
    $('processes').replaceChildren(...list.map((p) => el('tr', {},
      el('td', {}, el('div', { className: 'name', textContent: p.host + ' · pid ' + p.pid }), el('div', { className: 'sub mono', textContent: p.process })),
      el('td', {}, stateBadge(p.ready)), el('td', {}, stateBadge(p.status)),
      timeCell(p.started), el('td', { className: 'num', textContent: duration(p.uptime) }),
      el('td', { textContent: p.version }),
      el('td', { className: 'num', textContent: p.connections }), el('td', { className: 'num', textContent: p.rooms }),
      el('td', {}, stateBadge(p.store)),
      el('td', {}, ...(Object.keys(p.redis || {}).length ? Object.entries(p.redis).map(([k, v]) => el('span', { title: k }, stateBadge(v))) : [stateBadge('off')])),
      el('td', {}, stateBadge(p.fanout)))))
  } catch (e) { failed('processes')(e) }
}

function usage (value, limit) {
  if (limit === null || limit === undefined) return el('span', { textContent: value + ' (no limit)' })
  const share = limit > 0 ? Math.min(1, value / limit) : 1
  return el('div', { className: 'bar' }, el('div', { className: 'track' }, el('div', { className: 'fill' + (share > 0.8 ? ' high' : ''), style: 'width:' + Math.round(share * 100) + '%' })),
    el('span', { textContent: value + ' / ' + limit }))
}

async function refreshTenants () {
  try {
    const list = (await getJSON('/admin/api/tenants')).tenants
    $('tenants').replaceChildren(...list.map((t) => el('tr', {},
      el('td', {}, el('div', { className: 'name', textContent: t.tenant + ' / ' + t.app })),
      el('td', { textContent: t.plan || '—' }),
      el('td', {}, usage(t.live_documents, t.limits.max_documents)),
      el('td', {}, usage(t.connections, t.limits.max_connections)),
      el('td', { className: 'num', textContent: t.users }),
      el('td', { className: 'num', textContent: t.stored_documents }),
      el('td', { className: 'num', textContent: bytes(t.stored_bytes) }))))
  } catch (e) { failed('tenants')(e) }
}

async function refreshAudit (more = false) {
  try {
    const page = await getJSON('/admin/api/audit' + (more && auditCursor ? '?cursor=' + encodeURIComponent(auditCursor) : ''))
    auditCursor = page.cursor
    const rows = page.entries.map((a) => el('tr', {},
      timeCell(a.at),
      el('td', {}, el('span', { textContent: a.admin }), el('span', { className: 'badge off', textContent: a.role })),
      el('td', {}, el('span', { className: 'badge ' + (a.details && a.details.refused ? 'bad' : 'on'), textContent: a.action })),
      el('td', { className: 'mono', textContent: a.target || '—' }),
      el('td', { className: 'mono', textContent: a.ip || '—' }),
      el('td', { className: 'sub', textContent: clip(Object.entries(a.details || {}).map(([k, v]) => k + '=' + text(v)).join(' '), 160) })))
    if (more) $('audit').append(...rows); else $('audit').replaceChildren(...rows)
    $('no-audit').hidden = $('audit').children.length > 0
    $('more-audit').hidden = !auditCursor
  } catch (e) { failed('audit')(e) }
}

// --- activity: uPlot charts of the last hour ------------------------------------------------

const CHARTS = [
  { id: 'connections', title: 'Connections', series: [['connections', '#2563eb']] },
  { id: 'traffic', title: 'Updates and deliveries per second', series: [['updates', '#16a34a'], ['deliveries', '#9333ea']] },
  { id: 'refusals', title: 'Refused handshakes by close code (per 10 s)', refusals: true },
  { id: 'latency', title: 'Commit latency (ms)', series: [['commit_p50', '#0891b2', 1000], ['commit_p99', '#dc2626', 1000]] },
  { id: 'errors', title: 'Errors (storage, registry, Redis; per 10 s)', series: [['errors', '#b91c1c']] }
]
const PALETTE = ['#ea580c', '#db2777', '#7c3aed', '#0d9488', '#ca8a04', '#4b5563']

function chartData (points, spec) {
  const xs = points.map((p) => p.t)
  if (spec.refusals) {
    const codes = [...new Set(points.flatMap((p) => Object.keys(p.refusals)))].sort()
    return { names: codes.length ? codes : ['none'], data: [xs, ...(codes.length ? codes.map((c) => points.map((p) => p.refusals[c] || 0)) : [points.map(() => 0)])] }
  }
  return { names: spec.series.map((s) => s[0]), data: [xs, ...spec.series.map(([field, , scale]) => points.map((p) => p[field] === null ? null : p[field] * (scale || 1)))] }
}

async function refreshActivity () {
  try {
    const points = (await getJSON('/admin/api/stats?minutes=60')).points
    const box = $('charts')
    const width = Math.max(500, Math.floor((box.clientWidth - 36) / 2))
    charts = charts || {}
    for (const spec of CHARTS) {
      const { names, data } = chartData(points, spec)
      const signature = names.join(',')
      let entry = charts[spec.id]
      if (!entry || entry.signature !== signature) {
        if (entry) entry.plot.destroy()
        let holder = $('chart-' + spec.id)
        if (!holder) { holder = el('div', { className: 'chart', id: 'chart-' + spec.id }, el('h3', { textContent: spec.title })); box.append(holder) }
        const colors = spec.series ? spec.series.map((s) => s[1]) : names.map((_, i) => PALETTE[i % PALETTE.length])
        const plot = new uPlot({ width, height: 180, series: [{}, ...names.map((n, i) => ({ label: n, stroke: colors[i], width: 2, spanGaps: false }))], axes: [{}, { size: 56 }], scales: { x: { time: true } } }, data, holder)
        entry = charts[spec.id] = { plot, signature }
      } else entry.plot.setData(data)
    }
  } catch (e) { failed('stats')(e) }
}

// --- tabs and the refresh loop ---------------------------------------------------------------

const REFRESH = { documents: () => refreshDocuments(), connections: refreshConnections, processes: refreshProcesses, activity: refreshActivity, tenants: refreshTenants, trash: refreshTrash, audit: () => refreshAudit() }
const EVERY = { documents: 2000, connections: 2000, processes: 2000, activity: 5000, tenants: 3000, trash: 5000, audit: 5000 }

function refresh () { return REFRESH[tab]() }

function select (name) {
  tab = name
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === name)
  for (const p of document.querySelectorAll('.panel')) p.hidden = p.id !== 'panel-' + name
  location.hash = name
  clearInterval(timer)
  refresh()
  timer = setInterval(refresh, EVERY[name])
}

for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => select(b.dataset.tab))
$('login').addEventListener('submit', (event) => {
  event.preventDefault()
  token = $('token').value.trim()
  sessionStorage.setItem(KEY, token)
  start()
})
$('logout').addEventListener('click', () => logout())
let searchTimer = null
$('search').addEventListener('input', () => { renderDocuments(); clearTimeout(searchTimer); searchTimer = setTimeout(() => refreshDocuments(), 250) })
$('stored').addEventListener('change', () => refreshDocuments())
$('more-documents').addEventListener('click', () => refreshDocuments(true))
$('more-audit').addEventListener('click', () => refreshAudit(true))
for (const f of ['tenant', 'app', 'doc', 'user', 'ip']) $('f-' + f).addEventListener('input', refreshConnections)

async function start () {
  $('login').hidden = true
  try { me = await getJSON('/admin/api/me') } catch (e) { return }
  $('console').hidden = false; $('logout').hidden = false; $('tabs').hidden = false
  $('whoami').textContent = me.name + ' · ' + me.role
  // The trash tab only where the server keeps one (history).
  const trash = await fetch('/admin/api/trash', { headers: { Authorization: 'Bearer ' + token } })
  document.querySelector('#tabs button[data-tab=trash]').hidden = !trash.ok
  const wanted = location.hash.slice(1)
  select(REFRESH[wanted] ? wanted : 'documents')
}

if (token) start(); else showLogin()

// A Tiptap 3 editor (StarterKit, which has Link) and a CodeMirror 6 editor, each on a
// y-websocket 3.1 provider, for real Chromium pages (bundled by bundle.mjs) that a
// backend edits over HTTP without Yjs (tests/test_content_browser.py).
// window.startTiptap({url, room, token, field}) / window.startCodeMirror({...}); the
// editor, provider and doc stay on window for the test's checks.
import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import { EditorView, basicSetup } from 'codemirror'
import { yCollab } from 'y-codemirror.next'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

function connect ({ url, room, token }) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    protocols: ['access_token', token],
    disableBc: true
  })
  provider.sockets = 0
  provider.on('status', ({ status }) => {
    if (status === 'connected') provider.sockets += 1
  })
  window.doc = doc
  window.provider = provider
  return { doc, provider }
}

window.startTiptap = (spec) => {
  const { doc } = connect(spec)
  window.editor = new Editor({
    element: document.querySelector('#editor'),
    extensions: [
      StarterKit.configure({ undoRedo: false, link: { openOnClick: false } }),
      Collaboration.configure({ document: doc, field: spec.field })
    ]
  })
}

window.startCodeMirror = (spec) => {
  const { doc, provider } = connect(spec)
  const text = doc.getText(spec.field)
  window.view = new EditorView({
    parent: document.querySelector('#editor'),
    doc: text.toString(),
    extensions: [basicSetup, yCollab(text, provider.awareness)]
  })
}

/** `value` without the keys whose value is null (the comparison). */
window.withoutNulls = (value) => JSON.parse(JSON.stringify(value, (k, v) => (v === null ? undefined : v)))

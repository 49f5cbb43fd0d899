// A Tiptap editor with collaboration carets on a y-websocket 3.1 provider, for a real
// Chromium page (bundled by bundle.mjs into one script). The test calls
// window.startEditor({url, room, token, name, color}); window.editor and window.provider
// stay reachable for its checks.
import { Editor } from '@tiptap/core'
import Document from '@tiptap/extension-document'
import Paragraph from '@tiptap/extension-paragraph'
import Text from '@tiptap/extension-text'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

window.startEditor = ({ url, room, token, name, color }) => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    protocols: ['access_token', token],
    disableBc: true
  })
  provider.connects = [] // when each socket opened
  provider.on('status', ({ status }) => {
    if (status === 'connected') provider.connects.push(Date.now())
  })
  const editor = new Editor({
    element: document.querySelector('#editor'),
    extensions: [
      Document, Paragraph, Text,
      Collaboration.configure({ document: doc }),
      CollaborationCaret.configure({ provider, user: { name, color } })
    ]
  })
  window.doc = doc
  window.provider = provider
  window.editor = editor
}

/** The names on the remote carets this editor shows. */
window.caretNames = () => [...document.querySelectorAll('.collaboration-carets__label')].map((e) => e.textContent)

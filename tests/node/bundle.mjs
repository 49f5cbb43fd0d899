// Bundles a browser entry (e.g. tiptap_editor.js) with its npm packages into one script
// for a Chromium page: node bundle.mjs ENTRY OUTFILE [FORMAT]
// FORMAT: iife (default), or esm for an entry with top-level await (a module script).
// Packages resolve from this directory's node_modules wherever ENTRY is (a test may
// write one under its tmp_path).
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'

const [entry, outfile, format = 'iife'] = process.argv.slice(2)
await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format,
  logLevel: 'warning',
  nodePaths: [fileURLToPath(new URL('node_modules', import.meta.url))]
})

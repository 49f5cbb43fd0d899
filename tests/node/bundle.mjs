// Bundles a browser entry (e.g. tiptap_editor.js) with its npm packages into one script
// for a Chromium page: node bundle.mjs ENTRY OUTFILE
import { build } from 'esbuild'

const [entry, outfile] = process.argv.slice(2)
await build({ entryPoints: [entry], outfile, bundle: true, format: 'iife', logLevel: 'warning' })

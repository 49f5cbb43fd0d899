#!/usr/bin/env python3
"""Edit a shared document from the terminal, as any y-websocket editor would.

    TOKEN=$(wsserver token --tenant dev --app editor)
    scripts/edit.py --url ws://127.0.0.1:1234 --doc my-doc --token "$TOKEN"

Each line typed is appended to the document's Y.Text (default field `text`); the whole
text is printed again whenever anyone changes it. Ctrl-D quits. It speaks the plain
y-websocket protocol (sync step 1/2, updates) with pycrdt and websocket-client.
"""

import argparse
import select
import sys
from pathlib import Path

import websocket
from pycrdt import Doc, Text

# The checkout's wsserver, also where only requirements.txt is installed (a buildpack).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wsserver.protocol import codec  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:1234")
    parser.add_argument("--doc", required=True, help="document name")
    parser.add_argument("--token", required=True, help="JWT (see `wsserver token`)")
    parser.add_argument("--field", default="text", help="name of the Y.Text (default: text)")
    args = parser.parse_args()

    doc = Doc()
    text = doc.get(args.field, type=Text)
    ws = websocket.create_connection(
        f"{args.url.rstrip('/')}/{args.doc}", subprotocols=["access_token", args.token]
    )
    ws.send_binary(codec.sync_step1(doc.get_state()))
    shown = None
    print(f"connected to {args.doc}; type lines to append, Ctrl-D to quit", file=sys.stderr)
    while True:
        ready, _, _ = select.select([ws.sock, sys.stdin], [], [])
        if ws.sock in ready:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                print(
                    f"closed by server: {code} {data[2:].decode(errors='replace')}", file=sys.stderr
                )
                return 1
            if opcode != websocket.ABNF.OPCODE_BINARY:
                continue
            message = codec.decode(data) if data[0] == 0 or data[0] == 1 else None
            if message is None:
                continue
            if message.kind == codec.KIND_STEP1:
                ws.send_binary(codec.sync_step2(doc.get_update(message.data)))
            elif message.kind in (codec.KIND_STEP2, codec.KIND_UPDATE):
                doc.apply_update(message.data)
        if sys.stdin in ready:
            line = sys.stdin.readline()
            if not line:
                ws.close()
                return 0
            before = doc.get_state()
            text += line
            ws.send_binary(codec.sync_update(doc.get_update(before)))
        if str(text) != shown:
            shown = str(text)
            print(f"--- {args.doc} ---\n{shown}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

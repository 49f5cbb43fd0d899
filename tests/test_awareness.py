"""Awareness ownership (issue 8 item 6): a connection may only set and remove the
awareness client ids it announced first; entries for ids another connection owns are
dropped (and counted), never relayed, and its leaving removes only its own ids."""

import json
import threading
import time
import urllib.request
import uuid

import pytest
import websocket
from conftest import make_token, run_node
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Awareness as PycrdtAwareness
from pycrdt import Doc
from test_bad_input import Client

from wsserver.documents.awareness import Awareness
from wsserver.documents.presence import RETURN_WINDOW
from wsserver.protocol import codec


def announce(*entries):
    """An awareness message: entries of (client id, clock, state or None)."""
    return codec.awareness(
        codec.encode_awareness_entries(
            [
                codec.AwarenessEntry(cid, clock, json.dumps(state).encode())
                for cid, clock, state in entries
            ]
        )
    )


def awareness_states(client, timeout=5):
    """The client's next awareness message, as {client id: (clock, state)}."""
    while True:
        message = codec.decode(client.recv(timeout))
        if message.kind == codec.KIND_AWARENESS:
            return {
                e.client_id: (e.clock, json.loads(e.state))
                for e in codec.parse_awareness_update(message.data)
            }


def everything_seen(client):
    return b"".join(client.received)


def healthz(server):
    with urllib.request.urlopen(f"{server.http}/healthz", timeout=5) as response:
        return json.load(response)


def test_a_connection_cannot_overwrite_or_remove_another_ones_awareness(server):
    doc = f"aw-{uuid.uuid4().hex[:8]}"
    victim = Client(server, doc, make_token(sub="alice"))
    victim.recv()  # step 1
    victim.send(announce((111, 1, {"user": "alice"})))
    assert awareness_states(victim) == {111: (1, {"user": "alice"})}  # relayed back
    watcher = Client(server, doc, make_token(sub="walter"))
    watcher.recv()  # step 1
    assert awareness_states(watcher) == {111: (1, {"user": "alice"})}  # on join

    spoofer = Client(server, doc, make_token(sub="mallory"))
    spoofer.recv()
    awareness_states(spoofer)
    # One message: an overwrite of alice's id (ignored) and an id of its own (relayed).
    spoofer.send(announce((111, 5, {"user": "mallory"}), (222, 1, {"user": "spoofer"})))
    assert awareness_states(watcher) == {222: (1, {"user": "spoofer"})}
    spoofer.send(announce((111, 6, None)))  # a removal of alice: ignored
    spoofer.close()
    # Its leaving removes its own id, and only that.
    assert [(cid, state) for cid, (_, state) in awareness_states(watcher).items()] == [(222, None)]
    watcher.send(b"\x03")  # query awareness
    assert awareness_states(watcher) == {111: (1, {"user": "alice"})}
    assert b"mallory" not in everything_seen(watcher) + everything_seen(victim)
    # alice is still in charge of her id
    victim.send(announce((111, 2, {"user": "alice", "cursor": 3})))
    assert awareness_states(watcher) == {111: (2, {"user": "alice", "cursor": 3})}
    assert healthz(server)["awareness_ignored"] == 2
    server.wait_log("ignored 2 awareness entries from 127.0.0.1")
    for c in (victim, watcher):
        c.close()
    assert "Traceback" not in server.log()


def test_a_reconnecting_user_takes_its_client_id_over(server):
    """A provider keeps its client id across reconnects; its new socket may arrive
    before the server noticed the old one died: the same user (sub) takes the id over,
    and the old socket's end then removes nothing."""
    doc = f"aw-{uuid.uuid4().hex[:8]}"
    old = Client(server, doc, make_token(sub="alice"))
    old.recv()
    old.send(announce((111, 1, {"user": "alice"})))
    awareness_states(old)
    watcher = Client(server, doc, make_token(sub="walter"))
    watcher.recv()
    awareness_states(watcher)
    new = Client(server, doc, make_token(sub="alice"))
    new.recv()
    awareness_states(new)
    new.send(announce((111, 2, {"user": "alice", "tab": "new"})))
    assert awareness_states(watcher) == {111: (2, {"user": "alice", "tab": "new"})}
    old.close()
    watcher.send(b"\x03")  # query awareness: alice is still there
    assert awareness_states(watcher) == {111: (2, {"user": "alice", "tab": "new"})}
    # and another anonymous connection still cannot touch it
    anonymous = Client(server, doc, make_token())
    anonymous.recv()
    awareness_states(anonymous)
    anonymous.send(announce((111, 9, None)))
    anonymous.close()
    watcher.send(b"\x03")
    assert awareness_states(watcher) == {111: (2, {"user": "alice", "tab": "new"})}
    for c in (new, watcher):
        c.close()


def test_an_anonymous_connection_cannot_take_over_another_anonymous_ones_id(server):
    """Without a `sub` two connections are not known to be the same user: the takeover
    of a reconnecting provider is for named users only, so a second anonymous
    connection can neither rename nor remove the first one's client id."""
    doc = f"aw-{uuid.uuid4().hex[:8]}"
    first = Client(server, doc, make_token())
    first.recv()  # step 1
    first.send(announce((111, 1, {"user": "first"})))
    assert awareness_states(first) == {111: (1, {"user": "first"})}
    watcher = Client(server, doc, make_token(sub="walter"))
    watcher.recv()  # step 1
    assert awareness_states(watcher) == {111: (1, {"user": "first"})}  # on join
    second = Client(server, doc, make_token())
    second.recv()  # step 1
    awareness_states(second)
    # One message: a newer state for the first one's id (ignored), and an id of its own.
    second.send(announce((111, 5, {"user": "second"}), (222, 1, {"user": "second"})))
    assert awareness_states(watcher) == {222: (1, {"user": "second"})}
    second.send(announce((111, 6, None)))  # a removal with a newer clock: ignored too
    watcher.send(b"\x03")  # query awareness
    assert awareness_states(watcher) == {
        111: (1, {"user": "first"}),
        222: (1, {"user": "second"}),
    }
    second.close()
    # Its leaving removes its own id, and only that; the first one still owns 111.
    assert [(cid, state) for cid, (_, state) in awareness_states(watcher).items()] == [(222, None)]
    first.send(announce((111, 2, {"user": "first", "cursor": 1})))
    assert awareness_states(watcher) == {111: (2, {"user": "first", "cursor": 1})}
    assert healthz(server)["awareness_ignored"] == 2
    for c in (first, watcher):
        c.close()


def test_an_awareness_state_nested_100000_deep_is_a_1002(server):
    """Issue 8 item 4: it raised RecursionError: 1011 and a traceback per message."""
    doc = f"aw-{uuid.uuid4().hex[:8]}"
    client = Client(server, doc)
    client.recv()
    client.send(
        codec.awareness(
            codec.encode_awareness_entries(
                [codec.AwarenessEntry(5, 1, b"[" * 100_000 + b"]" * 100_000)]
            )
        )
    )
    assert client.wait_close() == (1002, "awareness state nested too deeply")
    client.close()
    assert "Traceback" not in server.log() and " ERROR " not in server.log()


def test_real_providers_keep_their_presence_against_a_spoofer(server):
    result = run_node(
        "spoof.mjs",
        json.dumps(
            {
                "url": server.url,
                "room": f"aw-{uuid.uuid4().hex[:8]}",
                "token": make_token(sub="alice"),
                "spooferToken": make_token(sub="mallory"),
            }
        ),
    )
    assert result["nameAfterSpoof"] == "alice", result
    assert result["nameAfterSpooferLeft"] == "alice", result
    assert "mallory" not in result["namesSeenByB"] and None not in result["namesSeenByB"], result
    assert result["aId"] in result["bKeys"], result
    # Providers send every awareness change they receive back to the server: those copies
    # are dropped silently; only the spoofer's two entries (a new name, a removal) count.
    deadline = time.monotonic() + 10
    while healthz(server)["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert healthz(server)["awareness_ignored"] == 2


def test_one_connection_cannot_fill_the_room_with_client_ids(server):
    """Each awareness client id a connection announces is kept (and sent to everyone who
    joins) while it stays: without a cap one socket, even a read-only viewer's, would
    grow the room's memory for ever. Past 16 ids, new ones are dropped and counted."""
    doc = f"aw-{uuid.uuid4().hex[:8]}"
    flooder = Client(server, doc, make_token(sub="mallory", access="read"))
    flooder.recv()  # step 1
    pad = "x" * 1000
    for batch in range(10):
        flooder.send(announce(*[(1000 + batch * 50 + i, 1, {"pad": pad}) for i in range(50)]))
    watcher = Client(server, doc, make_token(sub="walter"))
    watcher.recv()  # step 1
    states = awareness_states(watcher)
    assert 1 <= len(states) <= 16, len(states)
    # Its own first ids still work, as for any provider.
    first = min(states)
    flooder.send(announce((first, 2, {"pad": "moved"})))
    assert awareness_states(watcher) == {first: (2, {"pad": "moved"})}
    for c in (flooder, watcher):
        c.close()
    deadline = time.monotonic() + 5  # counted once the connection is gone
    while healthz(server)["awareness_ignored"] != 500 - len(states):
        assert time.monotonic() < deadline, healthz(server)
        time.sleep(0.05)
    assert "Traceback" not in server.log()


# --- the awareness rules, against pycrdt's implementation -----------------------------

_ENTRY = st.tuples(
    st.integers(1, 4),  # client id
    st.integers(0, 4),  # clock
    st.sampled_from([b"", b"null", b'{"user":"a"}', b'{"user": "b", "cursor": [1, 2]}', b"7"]),
)


def _decoded(update):
    return [
        (e.client_id, e.clock, json.loads(e.state)) for e in codec.parse_awareness_update(update)
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_ENTRY, max_size=4), max_size=8), st.lists(st.integers(1, 4)))
def test_awareness_rules_are_pycrdts(updates, removed):
    """documents/awareness.py keeps states as the JSON clients sent instead of pycrdt's
    parsed ones; after any sequence of updates (clock 0 for a new client, equal and older
    clocks, empty and null removals) and a removal, it must hold the same states and
    clocks as pycrdt's Awareness, and encode the same update."""
    ours, theirs = Awareness(), PycrdtAwareness(Doc())
    theirs.set_local_state(None)  # as the room had it: the server shows no state of its own

    def check():
        others = {cid: m for cid, m in theirs.meta.items() if cid != theirs.client_id}
        assert ours.parsed() == {c: s for c, s in theirs.states.items() if c in others}
        assert {cid: m.clock for cid, m in ours.meta.items()} == {
            cid: m["clock"] for cid, m in others.items()
        }
        seen = sorted(ours.meta)
        assert _decoded(ours.encode(seen)) == _decoded(theirs.encode_awareness_update(seen))

    for entries in updates:
        data = codec.encode_awareness_entries([codec.AwarenessEntry(*e) for e in entries])
        ours.apply(codec.parse_awareness_update(data))
        theirs.apply_awareness_update(data, None)
        check()
    present = [cid for cid in removed if cid in ours.states]
    ours.remove(present)
    theirs.remove_awareness_states(present, None)
    check()


def test_a_returning_client_is_renewed_and_renews_the_others(server):
    """Peers took a returning provider's state as removed at the clock it comes back
    with, and y-protocols ignores a state whose clock is not newer. So the server answers
    a connection's first announcement with the removal of its own id at the last clock
    known for it (y-protocols then bumps its clock and announces again), never for an id
    another user owns; and once it is back, the room's other clients are sent theirs,
    for the returning provider (which removed them when its socket closed) to see them."""
    doc = f"aw-{uuid.uuid4().hex[:8]}"
    alice = Client(server, doc, make_token(sub="alice"))
    alice.recv()
    alice.send(announce((111, 3, {"user": "alice"})))
    assert awareness_states(alice) == {111: (3, {"user": "alice"})}  # relayed back
    assert awareness_states(alice) == {111: (3, None)}  # its own removal: announce again
    alice.send(announce((111, 4, {"user": "alice"})))
    awareness_states(alice)  # relayed back: she joined in the last RETURN_WINDOW seconds
    watcher = Client(server, doc, make_token(sub="walter"))
    watcher.recv()
    assert awareness_states(watcher) == {111: (4, {"user": "alice"})}  # on join
    watcher.send(announce((222, 1, {"user": "walter"})))
    assert awareness_states(watcher) == {222: (1, {"user": "walter"})}
    assert awareness_states(watcher) == {222: (1, None)}
    alice.close()
    assert awareness_states(watcher) == {111: (4, None)}
    # alice comes back announcing the clock the watcher saw removed: not relayed, but
    # she is sent her removal at that clock, and her newer clock is relayed.
    back = Client(server, doc, make_token(sub="alice"))
    back.recv()
    awareness_states(back)  # on join: walter
    back.send(announce((111, 4, {"user": "alice"})))
    assert awareness_states(back) == {111: (4, None)}
    back.send(announce((111, 5, {"user": "alice"})))
    assert awareness_states(watcher) == {111: (5, {"user": "alice"})}
    # and the watcher is sent its own removal, to announce itself to her again
    assert awareness_states(watcher) == {222: (1, None)}
    # Another user's first announcement of alice's id gets no removal of it.
    mallory = Client(server, doc, make_token(sub="mallory"))
    mallory.recv()
    awareness_states(mallory)
    mallory.send(announce((111, 5, {"user": "mallory"}), (333, 1, {"user": "mallory"})))
    assert awareness_states(mallory) == {333: (1, {"user": "mallory"})}
    assert awareness_states(mallory) == {333: (1, None)}
    for c in (back, watcher, mallory):
        c.close()
    assert "Traceback" not in server.log()


class _Peer:
    """A raw connection that behaves as a y-protocols client does: it announces its
    client id and answers the removal of its own id by announcing again with a newer
    clock. It counts the awareness frames it receives, and keeps the newest clock it saw
    of every other client id (`clocks`) and the clock of every present one (`present`)."""

    def __init__(self, server, doc, client_id, sub, clock=1):
        self.client_id, self.clock = client_id, clock
        self.frames, self.clocks, self.present = 0, {}, {}
        self.client = Client(server, doc, make_token(sub=sub))
        self.client.recv()  # step 1
        self.client.send(announce((client_id, clock, {"user": sub})))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                message = codec.decode(self.client.recv(0.05))
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return  # its server is gone (killed)
            if message.kind != codec.KIND_AWARENESS:
                continue
            self.frames += 1
            for e in codec.parse_awareness_update(message.data):
                if e.client_id == self.client_id:
                    if e.removal and e.clock >= self.clock:
                        self.clock = e.clock + 1
                        self.client.send(announce((self.client_id, self.clock, {"user": "p"})))
                elif e.removal:
                    self.present.pop(e.client_id, None)
                else:
                    self.clocks[e.client_id] = max(e.clock, self.clocks.get(e.client_id, 0))
                    self.present[e.client_id] = e.clock

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.client.close()


@pytest.mark.long
def test_a_reconnect_loop_costs_the_other_clients_no_frames_per_renewal(server):
    """A returning client makes every client of the document announce itself again
    (`_renew_local`): the returning provider removed them all when its socket closed.
    Relayed to everyone, that was N * N frames per return, and a client reconnecting in
    a loop with the id it had could cause two a second (~19,700 frames/s sent on a
    100-client document). The returning connection still gets every client's newer
    clock each time; the others, who hold those states already, get only the returning
    client's own state, its removal, and their own renewal."""
    doc = f"aw-{uuid.uuid4().hex[:8]}"
    peers = [_Peer(server, doc, 100 + i, f"p{i}") for i in range(10)]
    deadline = time.monotonic() + 5
    while not all(p.clock == 2 and len(p.clocks) == 9 for p in peers):  # each renewed once
        assert time.monotonic() < deadline, [(p.clock, p.clocks) for p in peers]
        time.sleep(0.02)
    # They came in just now: the others' renewals go to them too for a while (their
    # providers may have removed everyone), as to any connection that comes back.
    time.sleep(RETURN_WINDOW + 0.2)
    watcher = peers[0]
    frames_before = watcher.frames
    seen = {}  # what the returning provider knew of each peer before its socket closed
    clock = 1
    returns = 5
    for _ in range(returns + 1):
        mallory = Client(server, doc, make_token(sub="mallory"))
        mallory.recv()  # step 1
        mallory.send(announce((999, clock, {"user": "mallory"})))
        deadline = time.monotonic() + 5
        clocks, renewed = {}, False
        # It is sent its own removal, and sees every peer at a newer clock than it saw
        # before (y-protocols ignores a clock that is not newer).
        while not (
            renewed and len(clocks) == 10 and all(clocks[c] > seen.get(c, 0) for c in clocks)
        ):
            message = codec.decode(mallory.recv(max(0.01, deadline - time.monotonic())))
            if message.kind != codec.KIND_AWARENESS:
                continue
            for e in codec.parse_awareness_update(message.data):
                if e.client_id == 999:
                    if e.removal and e.clock >= clock:
                        clock, renewed = e.clock + 1, True
                        mallory.send(announce((999, clock, {"user": "mallory"})))
                elif not e.removal:
                    clocks[e.client_id] = max(e.clock, clocks.get(e.client_id, 0))
        seen = clocks
        mallory.close()
    time.sleep(0.3)  # the last removal reaches the watcher
    received = watcher.frames - frames_before
    for p in peers:
        p.close()
    # mallory's state, its removal and the watcher's own renewal per return (+ the
    # first visit); the others' renewals (9 a return) are not among them: at most one
    # each, a state last sent to everyone SHARE_INTERVAL ago going out again.
    assert received <= 3 * (returns + 1) + 9, received
    assert "Traceback" not in server.log()

"""`auth.close_on_expiry` (issue 8 item 10): an open connection whose token's exp (plus
the 5 s skew) passes is closed with 4002 "token expired"; off by default."""

import time
import uuid

import pytest
from conftest import base_config, make_token
from test_bad_input import Client, Editor, text_of

from wsserver.errors import ConfigError
from wsserver.handshake.auth import Authenticator
from wsserver.protocol import codec
from wsserver.settings import Config


def _expiry_config(tmp_path, close_on_expiry):
    config = base_config(tmp_path)
    if close_on_expiry is not None:
        config["auth"]["close_on_expiry"] = close_on_expiry
    return config


def test_an_expired_token_closes_its_connection_with_4002(start_server, tmp_path):
    server = start_server(_expiry_config(tmp_path, True))
    doc = f"exp-{uuid.uuid4().hex[:8]}"
    # exp passed 4 s ago: inside the 5 s skew, so admitted, and closed about 1 s later.
    expiring = Client(server, doc, make_token(sub="short", ttl=-4))
    lasting = Client(server, doc, make_token(sub="long", ttl=600))
    expiring.recv(), lasting.recv()
    editor = Editor(client_id=5)
    first = codec.sync_update(editor.insert("before"))
    expiring.send(first)
    expiring.wait_for(first)  # editing works until exp + skew
    started = time.monotonic()
    assert expiring.wait_close(timeout=5) == (4002, "token expired")
    assert time.monotonic() - started < 4
    # the other connection carries on, and the closed one changed nothing after its close
    second = codec.sync_update(editor.insert(" after"))
    lasting.send(second)
    lasting.wait_for(second)
    assert text_of(lasting.sync()) == "before after"
    server.wait_log("closing 127.0.0.1: 4002 token expired")
    for c in (expiring, lasting):
        c.close()


def test_by_default_an_open_connection_outlives_its_token(start_server, tmp_path):
    server = start_server(_expiry_config(tmp_path, None))
    client = Client(server, f"exp-{uuid.uuid4().hex[:8]}", make_token(ttl=-4))
    client.recv()
    time.sleep(2.5)  # past exp + skew
    update = codec.sync_update(Editor(client_id=6).insert("still here"))
    client.send(update)
    client.wait_for(update)
    client.close()


def test_close_on_expiry_must_be_a_boolean(tmp_path):
    config = Config.from_mapping(_expiry_config(tmp_path, "yes"))
    with pytest.raises(ConfigError) as info:
        Authenticator.from_config(config.auth)
    assert info.value.key == "auth.close_on_expiry"

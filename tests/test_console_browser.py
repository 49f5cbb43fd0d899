"""The admin console in headless Chromium against a real cluster (two gunicorn workers,
Redis, Postgres) while providers edit: every panel, as an operator and as a viewer.

Screenshots: into $CONSOLE_SCREENSHOTS when set (`CONSOLE_SCREENSHOTS=docs` renews the
README's pictures), else into the test's tmp_path."""

import os
from pathlib import Path

import pytest
import yaml
from conftest import base_config
from test_console import ADMINS, OPERATOR, VIEWER, ok
from test_ops import Gunicorn, closes_once_closed, doc_name
from test_ops import providers as providers  # a fixture


def login(page, server, token):
    page.goto(f"{server.http}/admin")
    page.fill("#token", token)
    page.click("#login button")
    page.wait_for_selector("#tabs button.active", timeout=5000)


def tab(page, name):
    page.click(f"#tabs button[data-tab='{name}']")
    page.wait_for_selector(f"#panel-{name}:not([hidden])", timeout=5000)


@pytest.mark.long
def test_every_panel_of_the_console_on_a_cluster(tmp_path, providers, redis_url, pg_url, browser):
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    config = base_config(
        tmp_path,
        admin=ADMINS,
        redis=redis_url,
        storage=pg_url,
        unload_after=0.5,
        plans={"team": {"max_connections": 20, "max_documents": 10}},
    )
    config["auth"]["tenants"]["acme"]["apps"]["editor"] = {"plan": "team"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    server = Gunicorn(tmp_path / "config.yaml", workers=2)
    try:
        base = doc_name("roadmap")
        quiet = providers(server.url, f"{base}-archive", ["carol"])
        quiet.insert(0, "Last year's plan")
        quiet.quit()  # stored, nobody in it
        editing = [
            providers(server.url, f"{base}-{i}", [f"user-{i}a", f"user-{i}b"], names=["Ada", "Bo"])
            for i in range(3)
        ]
        for i, p in enumerate(editing):
            p.insert(0, f"Draft {i}")
        _wait_everywhere(server, 6)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 760})
            login(page, server, OPERATOR)
            assert page.inner_text("#whoami") == "alice · operator"
            _documents(page, base, editing, shots)
            _connections(page, base, editing, shots)
            _processes(page, shots)
            _activity(page, shots)
            _tenants(page, shots)
            _audit(page, shots)
            _history(page, base, editing, shots)
            viewer = browser.new_page(viewport={"width": 1360, "height": 760})
            login(viewer, server, VIEWER)
            tab(viewer, "connections")
            viewer.wait_for_selector("#connections tr", timeout=5000)
            assert viewer.locator("#connections button.danger").count() == 0
            viewer.fill("#f-doc", "")
            tab(viewer, "documents")
            viewer.fill("#search", base)
            viewer.click(f"tr[data-name='{base}-0']")
            viewer.wait_for_selector("#versions tr", timeout=5000)  # a viewer reads them
            buttons = viewer.locator("#doc-versions button:visible").all_inner_texts()
            assert set(buttons) == {"Preview"}, buttons  # no "Save a version"
            assert viewer.locator("#delete:visible").count() == 0
        finally:
            browser.close()
        actions = [e["action"] for e in ok(server, "audit")["entries"]]
        assert {"disconnect", "version", "preview", "restore", "delete", "undelete"} <= set(
            actions
        ), actions
        assert server.stop() == 0
    finally:
        server.kill()


def _wait_everywhere(server, n):
    """Every connection listed (the workers' answers through the board)."""
    from test_ops import eventually

    eventually(
        lambda: len(ok(server, "connections")["connections"]) >= n,
        timeout=15,
        what=f"{n} connections listed",
    )


def _documents(page, base, editing, shots):
    page.fill("#search", base)
    page.wait_for_selector(f"tr[data-name='{base}-archive'] .badge.off", timeout=5000)
    page.wait_for_selector(f"tr[data-name='{base}-0'] .badge.on", timeout=5000)
    page.click(f"tr[data-name='{base}-archive']")  # a stored document opens like a live one
    page.wait_for_function(
        "() => [...document.querySelectorAll('pre.content')]"
        '.some(e => e.textContent === "Last year\'s plan")',
        timeout=5000,
    )
    archived = page.inner_text(f"tr[data-name='{base}-archive'] td.sub")
    assert archived != "—" and any(ch.isdigit() for ch in archived), archived
    page.click(f"tr[data-name='{base}-1']")
    editing[1].insert(0, " and more")
    page.wait_for_function(
        "() => [...document.querySelectorAll('pre.content')]"
        ".some(e => e.textContent === 'Draft 1 and more')",
        timeout=5000,
    )
    page.wait_for_selector("#doc-connections tr[data-conn]", timeout=5000)
    # dates carry the day and the time zone; the list's size is the inspector's
    when = page.inner_text(f"tr[data-name='{base}-1'] td.sub")
    assert any(ch.isdigit() for ch in when) and ("UTC" in when or "GMT" in when), when
    # (the inspector is live, the list refreshes: they agree once it has)
    row_size = f"tr[data-name='{base}-1'] td.num:nth-child(4)"
    page.wait_for_function(
        "([row, meta]) => document.querySelector(row)?.textContent"
        " === document.querySelector(meta)?.textContent",
        arg=[row_size, ".meta div:nth-child(3) b"],
        timeout=5000,
    )
    assert page.inner_text(".meta div:nth-child(3) b") == page.inner_text(row_size)
    page.screenshot(path=str(shots / "console-documents.png"))


def _connections(page, base, editing, shots):
    tab(page, "connections")
    page.fill("#f-doc", f"{base}-2")
    page.wait_for_function(
        "() => document.querySelectorAll('#connections tr').length === 2", timeout=5000
    )
    page.fill("#f-doc", "")
    page.wait_for_function(
        "() => document.querySelectorAll('#connections tr').length >= 6", timeout=5000
    )
    page.screenshot(path=str(shots / "console-connections.png"))
    page.fill("#f-doc", f"{base}-2")
    page.fill("#f-user", "user-2b")
    page.wait_for_function(
        "() => document.querySelectorAll('#connections tr').length === 1", timeout=5000
    )
    page.click("#connections button.danger")
    page.select_option("#disconnect-code", "4404")
    page.fill("#disconnect-reason", "runaway client")
    page.click("#disconnect-ok")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('disconnected')",
        timeout=5000,
    )
    closes = closes_once_closed(editing[2], 1)  # what user-2b's provider saw
    assert closes[1][0] == {"code": 4404, "reason": "runaway client"}, closes
    closes = editing[2].quit()["closes"]  # quitting adds a null close to each
    assert closes[0] == [None], closes
    page.fill("#f-user", "")
    page.fill("#f-doc", "")


def _processes(page, shots):
    tab(page, "processes")
    page.wait_for_function(
        "() => document.querySelectorAll('#processes tr').length === 2", timeout=5000
    )
    assert page.locator("#processes .badge.on", has_text="ready").count() == 2
    page.screenshot(path=str(shots / "console-processes.png"))


def _activity(page, shots):
    tab(page, "activity")
    page.wait_for_function(
        "() => document.querySelectorAll('#charts .uplot').length === 5", timeout=5000
    )
    page.screenshot(path=str(shots / "console-activity.png"), full_page=True)


def _tenants(page, shots):
    tab(page, "tenants")
    row = page.locator("#tenants tr", has_text="acme / editor")
    row.wait_for(timeout=5000)
    assert "team" in row.inner_text() and "/ 20" in row.inner_text()
    page.screenshot(path=str(shots / "console-tenants.png"))


def _audit(page, shots):
    tab(page, "audit")
    first = page.locator("#audit tr").first
    first.wait_for(timeout=5000)
    assert "disconnect" in first.inner_text() and "alice" in first.inner_text()
    page.screenshot(path=str(shots / "console-audit.png"))


def _history(page, base, editing, shots):
    """Issue 24 in the console: a live document's versions (save one, preview it, restore
    it: the page shows the restored content live), and the trash (a delete lands there,
    the stored search says so, an undelete brings the document back)."""
    tab(page, "documents")
    page.fill("#search", base)
    page.click(f"tr[data-name='{base}-0']")
    # at once: the document open before (-1) and its buttons are gone from the panel (its
    # "Save a version" saved there while this one's first event was on its way)
    assert f"{base}-1" not in page.inner_text("#detail")
    page.wait_for_selector("#doc-versions h4", timeout=5000)
    assert page.inner_text("#detail h3") == f"{base}-0"
    page.once("dialog", lambda dialog: dialog.accept("before the edit"))
    page.click("#doc-versions button:has-text('Save a version')")
    saved = page.locator("#versions tr", has_text="before the edit")
    saved.wait_for(timeout=5000)
    editing[0].insert(0, " scrapped")
    page.wait_for_function(
        "() => [...document.querySelectorAll('pre.content')]"
        ".some(e => e.textContent === 'Draft 0 scrapped')",
        timeout=5000,
    )
    saved.locator("button", has_text="Preview").click()
    page.wait_for_selector("#preview-dialog[open]", timeout=5000)
    assert '"Draft 0"' in page.inner_text("#preview-content")
    page.screenshot(path=str(shots / "console-version.png"))
    page.once("dialog", lambda dialog: dialog.accept())  # "Restore ...?"
    page.click("#preview-restore")
    page.wait_for_function(
        "() => [...document.querySelectorAll('pre.content')]"
        ".some(e => e.textContent === 'Draft 0')",
        timeout=5000,
    )
    archive = f"{base}-archive"
    page.click(f"tr[data-name='{archive}']")
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete ...?"
    page.click("#delete")
    page.wait_for_selector(f"tr[data-name='{archive}'] .badge.bad", timeout=5000)
    assert page.inner_text(f"tr[data-name='{archive}'] .badge") == "in the trash"
    tab(page, "trash")
    row = page.locator(f"#trash tr[data-name='{archive}']")
    row.wait_for(timeout=5000)
    page.screenshot(path=str(shots / "console-trash.png"))
    row.locator("button", has_text="Undelete").click()
    row.wait_for(state="detached", timeout=5000)
    tab(page, "documents")
    page.wait_for_selector(f"tr[data-name='{archive}'] .badge.off", timeout=5000)

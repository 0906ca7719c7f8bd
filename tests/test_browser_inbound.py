"""The LuCI Inbound Services page in headless Chromium, against the real rpcd plugin.

The view (luci-app-wormhole/htdocs/.../view/wormhole/inbound.js) runs unchanged on the
LuCI stand-in in tests/luci_host, whose /ubus endpoint executes rpcd/libexec/wormhole
inside a scratch network namespace, with rpcd's ACLs taken from the app's acl.d file.
Screenshots land in tests/artifacts/screenshots/ (WORMHOLE_UPDATE_SCREENSHOTS=1 also refreshes
docs/screenshots/, which the README links).
"""

import json
import os
import re
import urllib.error
import urllib.request

import pytest

from tests import support
from tests.luci_host import webdriver
from tests.luci_host.lab import Lab
from tests.luci_host.page import EX, RD, Page
from tests.luci_host.server import APP_HTDOCS
from tests.luci_host.surface import ALLOWED_L, ALLOWED_REQUIRES

MARKUP = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser():
    support.require_root_tools("ip", "nft")
    why = webdriver.missing()
    if why:
        support.unavailable(why)
    b = webdriver.Browser()
    try:
        yield b
    finally:
        b.quit()


@pytest.fixture
def host_lab(tmp_path):
    """The scratch router and its LuCI host, for tests that speak HTTP without a browser."""
    support.require_root_tools("ip", "nft")
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab(tmp_path, browser):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        browser.get("about:blank")   # stop the page polling a host that goes away
        lab.close()


def _backend_error(lab, request):
    """What the plugin itself answers to `add` with this request (it must change nothing)."""
    before = lab.config()
    reply = lab.plugin("add", request)
    assert lab.config() == before
    return reply["error"]


# --- exemptions -------------------------------------------------------------------------

def test_add_with_enter_shows_row_writes_uci_and_delete_removes_it(browser, lab):
    page = Page(browser, lab)
    assert page.rows() == []
    assert page.visible(EX + " tr.placeholder")
    page.screenshot("empty.png")

    page.fill("port", "443")
    page.fill("label", "LuCI" + webdriver.ENTER)
    rows = page.wait_rows(lambda rows: len(rows) == 1, "the new exemption row")
    row = rows[0]
    assert (row["proto"], row["port"], row["label"]) == ("TCP", "443", "LuCI")
    assert row["status"] == "inert" and row["state"] == "● Inert"    # the kill-switch is off
    assert row["enabled"] is True and row["deletable"]
    assert page.field("port") and browser.prop(page.field("port"), "value") == ""   # the form is ready for the next

    config = lab.config()
    assert "config exemption '%s'" % row["id"] in config
    assert "option port '443'" in config and "option label 'LuCI'" in config
    assert [e["id"] for e in lab.plugin("list")["exemptions"]] == [row["id"]]

    page.click(EX + " tr[data-id='%s'] .wh-delete" % row["id"])
    page.wait_rows(lambda rows: rows == [], "the row to go away")
    assert "config exemption" not in lab.config()
    assert lab.plugin("list")["exemptions"] == []
    assert page.visible(EX + " tr.placeholder")
    page.assert_clean()


def test_udp_and_range_are_sent_as_chosen(browser, lab):
    page = Page(browser, lab)
    page.select("proto", "tcpudp")
    page.fill("port", "8000-8010" + webdriver.ENTER)
    row = page.wait_rows(lambda rows: len(rows) == 1, "the range row")[0]
    assert (row["proto"], row["port"], row["label"]) == ("TCP+UDP", "8000-8010", "")
    entry = lab.plugin("list")["exemptions"][0]
    assert (entry["proto"], entry["port"]) == ("tcpudp", "8000-8010")
    page.assert_clean()


def test_invalid_port_and_duplicate_show_the_backend_message_and_change_nothing(browser, lab):
    lab.add(proto="tcp", port="443", label="LuCI")
    page = Page(browser, lab)
    page.wait_rows(lambda rows: len(rows) == 1, "the existing row")

    for port, label in (("99999", "too big"), ("443", "again"), ("<b>x</b>", "")):
        expected = _backend_error(lab, {"type": "exemption", "proto": "tcp", "port": port,
                                        **({"label": label} if label else {})})
        before = lab.config()
        page.fill("port", port)
        page.fill("label", label + webdriver.ENTER)
        code, field, text, children = page.b.wait(lambda: page.form_error(), "the error for port %r" % port)
        assert (code, field, text) == (expected["code"], expected["field"], expected["message"])
        assert children == 0, "the message must be text, not markup"
        assert "cbi-input-invalid" in browser.prop(page.field("port"), "className")
        assert browser.prop(page.field("port"), "value") == port   # kept, to be corrected
        assert lab.config() == before
        assert len(page.rows()) == 1

    page.fill("port", "22" + webdriver.ENTER)
    page.wait_rows(lambda rows: len(rows) == 2, "the corrected entry")
    assert page.form_error() is None
    assert "cbi-input-invalid" not in browser.prop(page.field("port"), "className")
    page.assert_clean()


def test_markup_in_labels_names_and_messages_is_shown_as_text(browser, lab):
    page = Page(browser, lab)
    page.fill("port", "8443")
    page.fill("label", MARKUP + webdriver.ENTER)
    row = page.wait_rows(lambda rows: len(rows) == 1, "the row with the markup label")[0]
    assert row["label"] == MARKUP and row["elements_in_label"] == 0
    assert "option label '%s'" % MARKUP in lab.config()       # stored verbatim
    assert lab.plugin("list")["exemptions"][0]["label"] == MARKUP

    form = "#wh-redirect-form"
    page.fill("label", MARKUP, form)
    page.fill("src_dport", "9443", form)
    page.fill("dest_ip", "192.0.2.9" + webdriver.ENTER, form)
    fwd = page.wait_rows(lambda rows: len(rows) == 1, "the forward with the markup name", table=RD)[0]
    assert fwd["label"] == MARKUP and fwd["elements_in_label"] == 0

    assert browser.js("return document.querySelectorAll('#view img, #view script, #maincontent b').length") == 0
    page.assert_clean()


def test_killswitch_switches_rows_between_active_and_inert_and_the_banner(browser, lab):
    ex = lab.add(proto="tcp", port="443", label="LuCI")
    rd = lab.add(type="redirect", proto="tcp", src_dport="8443", dest_ip="192.0.2.9", dest_port="443")
    page = Page(browser, lab)
    page.wait_rows(lambda rows: rows and rows[0]["status"] == "inert", "an inert row")
    # A forward works whatever the kill-switch does: it is active either way.
    assert page.row(rd, RD)["status"] == "active"
    assert page.visible("#wh-inert-banner")
    assert page.text("#wh-killswitch").startswith("Off")

    lab.killswitch(True)
    page.wait_rows(lambda rows: rows[0]["status"] == "active", "the row to turn active")
    assert page.row(ex)["state"] == "● Active"
    assert page.row(rd, RD)["status"] == "active"
    assert not page.visible("#wh-inert-banner")
    assert "Active via wg0" in page.text("#wh-killswitch")

    lab.killswitch(False)
    page.wait_rows(lambda rows: rows[0]["status"] == "inert", "the row to turn inert again")
    page.b.wait(lambda: page.visible("#wh-inert-banner"), "the banner to come back")
    page.assert_clean()


def test_enable_toggle_disables_and_reenables(browser, lab):
    ex = lab.add(proto="udp", port="51820", label="WireGuard")
    page = Page(browser, lab)
    page.wait_rows(lambda rows: rows and rows[0]["enabled"], "the enabled row")
    page.click(EX + " tr[data-id='%s'] .wh-toggle" % ex)
    page.wait_rows(lambda rows: rows[0]["status"] == "disabled", "the row to show Disabled")
    assert page.row(ex)["state"] == "Disabled" and page.row(ex)["enabled"] is False
    assert "option enabled '0'" in lab.config()

    page.click(EX + " tr[data-id='%s'] .wh-toggle" % ex)
    page.wait_rows(lambda rows: rows[0]["status"] == "inert", "the row to be back")
    assert lab.plugin("list")["exemptions"][0]["enabled"] is True
    page.assert_clean()


# --- live refresh ------------------------------------------------------------------------

def test_live_refresh_updates_rows_in_place_and_keeps_what_is_being_typed(browser, lab):
    lab.lan()
    lab.tunnel()
    lab.killswitch(True)
    lab.listen(443)
    lab.listen(22)
    luci = lab.add(proto="tcp", port="443", label="LuCI", open=True)
    page = Page(browser, lab)
    page.wait_rows(lambda rows: len(rows) == 1, "the first row")
    browser.js("document.querySelector(\"tr[data-id='%s']\").__kept = 42" % luci)

    port = page.fill("port", "80")
    page.wait_polls(1)
    # Meanwhile, elsewhere: connections arrive and another admin adds entries.
    lab.connect_from_internet(443, times=3)
    ssh = lab.add(proto="tcp", port="22", label="SSH")
    lab.add(type="redirect", proto="tcp", src_dport="8096", dest_ip="192.168.1.50", label="Jellyfin")
    lab.add(type="redirect", proto="udp", src_dport="27015", dest_ip="10.9.0.2", snat=True, label="Game server")

    rows = page.wait_rows(lambda rows: len(rows) == 2 and rows[0]["hits"] == "3", "the new row and the hits")
    assert [r["id"] for r in rows] == [luci, ssh]
    page.wait_rows(lambda rows: len(rows) == 2, "the forwards", table=RD)
    page.wait_polls(2)

    assert browser.js("return document.querySelector(\"tr[data-id='%s']\").__kept" % luci) == 42, \
        "the row was rebuilt instead of updated in place"
    assert browser.prop(port, "value") == "80", "the refresh lost what was being typed"
    assert browser.js("return document.activeElement === arguments[0]", webdriver.ElementRef(port))

    browser.clear(port)
    fwd = page.rows(RD)
    assert [(r["label"], r["dest"], r["via"], r["client"], r["status"]) for r in fwd] == [
        ("Jellyfin", "192.168.1.50:8096", "LAN", "Kept", "active"),
        ("Game server", "10.9.0.2:27015", "Tunnel", "Masqueraded", "active")]
    # The periodic check finds that SSH listens but nothing accepts it, and offers the fix.
    page.wait_rows(lambda rows: rows[1]["fixes"] == ["open"] and rows[0]["hints"] == [], "the SSH hint")
    page.screenshot("entries.png")
    page.assert_clean()


# --- hints and their fixes -----------------------------------------------------------------

def test_router_service_without_firewall_accept_offers_open_port(browser, lab):
    lab.listen(8080)
    ex = lab.add(proto="tcp", port="8080", label="Web UI")
    page = Page(browser, lab)
    page.wait_rows(lambda rows: rows and rows[0]["fixes"] == ["open"], "the open-port fix")
    page.click(EX + " tr[data-id='%s'] .wh-fix[data-fix=open]" % ex)
    page.wait_rows(lambda rows: rows[0]["hints"] == [], "the hint to go away once open")
    assert "option open '1'" in lab.config()
    page.assert_clean()


def test_lan_service_without_forward_offers_a_forward_that_replaces_the_exemption(browser, lab):
    lab.lan()
    ex = lab.add(proto="tcp", port="8096", label="Jellyfin")
    page = Page(browser, lab)
    page.wait_rows(lambda rows: rows and rows[0]["fixes"] == ["forward"], "the add-a-forward fix")
    page.click(EX + " tr[data-id='%s'] .wh-fix[data-fix=forward]" % ex)

    form = "#wh-redirect-form"
    assert browser.prop(page.field("src_dport", form), "value") == "8096"
    assert browser.prop(page.field("label", form), "value") == "Jellyfin"
    assert page.visible(form + " .wh-replaces")

    # A refused forward keeps the exemption as it was.
    page.fill("dest_ip", "nas.lan" + webdriver.ENTER, form)
    code, field, _text, _n = page.b.wait(lambda: page.form_error(form), "the refusal")
    assert (code, field) == ("invalid_argument", "dest_ip")
    assert [(e["id"], e["enabled"]) for e in lab.plugin("list")["exemptions"]] == [(ex, True)]

    page.fill("dest_ip", "192.168.1.50" + webdriver.ENTER, form)
    page.wait_rows(lambda rows: len(rows) == 1, "the forward", table=RD)
    page.wait_rows(lambda rows: rows == [], "the exemption to be replaced")
    reply = lab.plugin("list")
    assert reply["exemptions"] == []
    assert [(r["proto"], r["src_dport"], r["dest_ip"], r["label"]) for r in reply["redirects"]] == [
        ("tcp", "8096", "192.168.1.50", "Jellyfin")]
    assert not page.visible(form + " .wh-replaces")
    page.assert_clean()


# --- forwards ------------------------------------------------------------------------------

def test_forward_form_uses_backend_validation_and_adds(browser, lab):
    lab.lan()
    page = Page(browser, lab)
    form = "#wh-redirect-form"
    cases = [
        ({"src_dport": "8443", "dest_ip": "not-an-ip"}, {"src_dport": "8443", "dest_ip": "not-an-ip"}),
        ({"src_dport": "", "dest_ip": "192.168.1.20"}, {"dest_ip": "192.168.1.20"}),
        ({"src_dport": "8443", "dest_ip": "192.168.1.20", "dest_port": "0"},
         {"src_dport": "8443", "dest_ip": "192.168.1.20", "dest_port": "0"}),
    ]
    for typed, request in cases:
        expected = _backend_error(lab, dict(request, type="redirect", proto="tcp"))
        for name in ("label", "src_dport", "dest_ip", "dest_port"):
            page.fill(name, typed.get(name, ""), form)
        page.click(form + " [name=save]")
        code, field, text, _n = page.b.wait(lambda: page.form_error(form), "the error for %r" % typed)
        assert (code, field, text) == (expected["code"], expected["field"], expected["message"])
        assert lab.plugin("list")["redirects"] == []

    page.fill("label", "Home Assistant", form)
    page.fill("src_dport", "8443", form)
    page.fill("dest_ip", "192.168.1.20", form)
    page.fill("dest_port", "443", form)
    browser.click(page.field("keep_client", form))       # masquerade instead
    page.click(form + " [name=save]")
    row = page.wait_rows(lambda rows: len(rows) == 1, "the forward row", table=RD)[0]
    assert (row["label"], row["proto"], row["port"], row["dest"], row["client"]) == (
        "Home Assistant", "TCP", "8443", "192.168.1.20:443", "Masqueraded")
    assert page.form_error(form) is None
    entry = lab.plugin("list")["redirects"][0]
    assert (entry["src_dport"], entry["dest_ip"], entry["dest_port"], entry["snat"]) == (
        "8443", "192.168.1.20", "443", True)

    page.click(RD + " tr[data-id='%s'] .wh-delete" % row["id"])
    page.wait_rows(lambda rows: rows == [], "the forward to go away", table=RD)
    assert "config redirect" not in lab.config()
    page.assert_clean()


# --- errors ----------------------------------------------------------------------------------

def test_broken_entries_and_a_failed_apply_are_shown_with_their_reasons(browser, lab):
    with open(lab.root / "etc" / "config" / "wormhole", "a") as f:
        f.write("\nconfig exemption 'game'\n\toption port '70000'\n\toption label 'Game <b>server</b>'\n")
    page = Page(browser, lab)
    row = page.wait_rows(lambda rows: len(rows) == 1, "the broken row")[0]
    assert row["status"] == "error" and row["state"] == "● Error"
    assert row["reason"] == "port: '70000' is out of range (ports are 1 to 65535)"
    assert row["label"] == "Game <b>server</b>" and row["elements_in_label"] == 0
    assert page.visible("#wh-warnings")

    lab.break_apply()
    page.fill("port", "443")
    page.fill("label", "LuCI" + webdriver.ENTER)
    code, _field, text, _n = page.b.wait(lambda: page.form_error(), "the apply failure")
    assert code == "apply_failed" and "Not a directory" in text
    rows = page.wait_rows(lambda rows: len(rows) == 2 and rows[1]["hints"], "the saved but unapplied entry")
    assert rows[1]["status"] == "error" and "Not a directory" in rows[1]["reason"]
    assert rows[1]["hints"] == ["forward"]      # the check ran and was shown...
    assert rows[0]["hints"] == []               # ...without repeating the broken entry's reason
    page.b.wait(lambda: browser.js("return document.querySelector('#wh-last-apply').getAttribute('data-ok')") == "0",
                "the header to report the failed apply")
    assert "Failed" in page.text("#wh-last-apply") and "Not a directory" in page.text("#wh-last-apply")

    page.fill("port", "99999" + webdriver.ENTER)
    page.b.wait(lambda: (page.form_error() or [None])[0] == "invalid_argument", "the validation error")
    page.b.wait(lambda: not browser.prop(page.field("save"), "disabled"), "the form to be ready again")
    page.screenshot("error.png")
    page.assert_clean()


def test_an_option_nothing_reads_is_said_on_its_row(browser, lab):
    """fw4-style tolerance for a foreign option, but said where the user looks (issue 14)."""
    with open(lab.root / "etc" / "config" / "wormhole", "a") as f:
        f.write("\nconfig exemption 'typo'\n\toption port '443'\n\toption prot 'udp'\n")
    page = Page(browser, lab)
    page.wait_rows(lambda rows: len(rows) == 1, "the row")
    texts = page.b.wait(lambda: browser.js(
        "return Array.from(document.querySelectorAll('tr[data-id=\"typo\"] .wh-warning')).map(n => n.textContent)"),
        "the row's warning")
    assert texts == ["prot: unknown option ignored"]
    page.assert_clean()


# --- who may do what ---------------------------------------------------------------------------

def test_read_only_session_sees_everything_and_can_change_nothing(browser, lab):
    lab.lan()
    ex = lab.add(proto="tcp", port="8096", label="Jellyfin")   # nothing listens: a fix would be offered
    rd = lab.add(type="redirect", proto="tcp", src_dport="8443", dest_ip="192.168.1.20", label="HA")
    page = Page(browser, lab, user="viewer")
    rows = page.wait_rows(lambda rows: rows and rows[0]["hints"] == ["forward"], "the row and its hint")
    assert rows[0]["id"] == ex and rows[0]["fixes"] == [] and not rows[0]["deletable"]
    assert rows[0]["toggle_disabled"] is True
    fwd = page.row(rd, RD)
    assert fwd["label"] == "HA" and fwd["toggle_disabled"] is True and not fwd["deletable"]
    assert page.visible("#wh-readonly")
    assert not browser.find_all("#wh-exemption-form") and not browser.find_all("#wh-redirect-form")
    writable = browser.js("""return Array.from(document.querySelectorAll(
		'#view input, #view select, #view button, #view textarea')).filter(function(e) { return !e.disabled; }).length""")
    assert writable == 0

    # The ACL, not only the page, refuses: a write through the page's own rpc is denied.
    before = lab.config()
    browser.js("""L.require('rpc').then(function(rpc) {
		return rpc.declare({ object: 'wormhole', method: 'add', params: [ 'port' ], reject: true })('9999');
	}).then(function(r) { window.__probe = { reply: r }; }, function(e) { window.__probe = { error: e.message }; });""")
    probe = page.b.wait(lambda: browser.js("return window.__probe"), "the denied write")
    assert "Access denied" in probe.get("error", ""), probe
    assert lab.config() == before
    page.assert_clean()


def test_page_needs_the_acl_group(host_lab):
    lab = host_lab
    for user, status in (("stranger", 403), ("viewer", 200), ("root", 200)):
        try:
            with urllib.request.urlopen(lab.host.page_url(user=user), timeout=10) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == status, user


def test_ubus_endpoint_answers_like_luci(host_lab):
    """The stand-in's JSON-RPC framing, checked here so the browser tests can trust it."""
    lab = host_lab
    def rpc(body):
        req = urllib.request.Request(lab.host.url + "/ubus", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    root, viewer = lab.host.users["root"].sid, lab.host.users["viewer"].sid
    call = lambda sid, obj, fn, args=None: rpc({"jsonrpc": "2.0", "id": 1, "method": "call",
                                                "params": [sid, obj, fn, args or {}]})
    assert call(viewer, "wormhole", "status")["result"][0] == 0
    assert call(viewer, "wormhole", "add", {"port": "1"})["error"] == {"code": -32002, "message": "Access denied"}
    assert call("0" * 32, "wormhole", "list")["error"]["code"] == -32002
    assert call(root, "wormhole", "nosuch")["error"]["code"] == -32002   # the ACL names the methods
    assert call(root, "session", "access", {"scope": "ubus", "object": "wormhole", "function": "del"})["result"] == \
        [0, {"access": True}]
    assert call(viewer, "session", "access", {"scope": "ubus", "object": "wormhole", "function": "del"})["result"] == \
        [0, {"access": False}]
    assert call(root, "wormhole", "list", {"ubus_rpc_session": root})["error"]["code"] == -32602
    assert call(root, "wormhole", "add", {"port": "99999"})["result"][1]["error"]["field"] == "port"
    batch = rpc([{"jsonrpc": "2.0", "id": 1, "method": "call", "params": [root, "wormhole", "status", {}]},
                 {"jsonrpc": "2.0", "id": 2, "method": "call", "params": [viewer, "wormhole", "del", {"id": "x"}]}])
    assert [r["id"] for r in batch] == [1, 2] and batch[0]["result"][0] == 0 and "error" in batch[1]


# --- Status → Overview ---------------------------------------------------------------------------

def test_status_overview_card_shows_counts_and_killswitch(browser, lab):
    lab.add(proto="tcp", port="443", label="LuCI")
    lab.add(type="redirect", proto="tcp", src_dport="8443", dest_ip="192.0.2.9")
    page = Page(browser, lab, path="admin/status/overview", ready="#wh-overview")
    assert page.text("#wh-count-exemptions") == "1"
    assert page.text("#wh-count-redirects") == "1"
    assert page.text("#wh-killswitch") == "Off"
    lab.killswitch(True)
    page.b.wait(lambda: page.text("#wh-killswitch") == "● Active via wg0", "the card to follow the kill-switch")
    page.assert_clean()


def test_rpc_stand_in_keeps_luci_semantics(browser, lab):
    """The stand-in's rpc reply handling, pinned: the view's error handling relies on it."""
    Page(browser, lab)
    browser.js("""L.require('rpc').then(function(rpc) {
		var reply = function(opts, result) {
			var req = Object.assign({ object: 'o', method: 'm', priv: [ null, null ], params: {} }, opts);
			var res = { ok: true, json: function() { return { jsonrpc: '2.0', id: 1, result: result }; } };
			try { return rpc.handleReply(req, res); } catch (e) { return 'raised ' + e.name; }
		};
		window.__rpc = [
			reply({}, [ 0, { a: 1 } ]), reply({}, [ 7 ]), reply({}, [ 0 ]),
			reply({ expect: { '': {} } }, [ 7 ]), reply({ expect: { '': {} } }, [ 0, { a: 1 } ]),
			reply({ expect: { a: 0 } }, [ 0, { a: 5 } ]), reply({ expect: { a: [] } }, [ 0, { a: 5 } ]),
			reply({ raise: true }, [ 7 ]), reply({ raise: true }, [ 0, { a: 1 } ]),
			reply({ filter: function(d, args, x) { return [ d, x ]; } , priv: [ null, null, 'x' ] }, [ 0, { a: 1 } ])
		];
	});""")
    got = browser.wait(lambda: browser.js("return window.__rpc"), "the rpc probes")
    assert got == [{"a": 1}, 7, 0, {}, {"a": 1}, 5, [], "raised RPCError", {"a": 1}, [{"a": 1}, "x"]]


def test_views_use_only_the_luci_client_surface():
    """The views must run unchanged on real LuCI: only these requires and L members, no HTML strings."""
    views = []
    for d, _dirs, files in os.walk(APP_HTDOCS):
        views += [os.path.join(d, f) for f in files if f.endswith(".js")]
    assert len(views) >= 2
    for path in views:
        with open(path) as f:
            src = re.sub(r"/\*.*?\*/|^\s*//.*?$", "", f.read(), flags=re.S | re.M)   # code, not comments
        requires = set(re.findall(r"^'require ([\w.]+)';$", src, re.M))
        assert requires <= ALLOWED_REQUIRES, (path, requires - ALLOWED_REQUIRES)
        assert set(re.findall(r"\bL\.(\w+)", src)) <= ALLOWED_L, path
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|%h", src), path

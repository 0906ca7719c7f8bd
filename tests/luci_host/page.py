"""The Inbound Services page as a user sees it: rows, forms, banners, with waits."""

import os
import shutil

from tests import support
from tests.luci_host import webdriver
from tests.luci_host.webdriver import WebDriverError

# Every run saves its screenshots under tests/artifacts/; the copies the README links
# (docs/screenshots/) are refreshed only on request, so test runs leave the tree clean.
SCREENSHOTS = os.path.join(support.REPO, "tests", "artifacts", "screenshots")
DOC_SCREENSHOTS = os.path.join(support.REPO, "docs", "screenshots")

ROWS_JS = """
return Array.from(document.querySelectorAll(arguments[0] + ' tr[data-id]')).map(function(tr) {
	var cell = function(n) { var c = tr.querySelector('.wh-' + n); return c ? c.textContent : null; };
	var toggle = tr.querySelector('.wh-toggle');
	return {
		id: tr.getAttribute('data-id'), status: tr.getAttribute('data-status'),
		proto: cell('proto'), port: cell('port'), label: cell('label'), hits: cell('hits'),
		dest: cell('dest'), via: cell('via'), client: cell('client'), state: cell('state'), reason: cell('reason'),
		status_text: cell('status'), uplink: cell('uplink'), family: cell('family'), clients: cell('clients'),
		editable: !!tr.querySelector('.wh-edit'),
		hints: Array.from(tr.querySelectorAll('.wh-hint')).map(function(h) { return h.getAttribute('data-fix') || h.textContent; }),
		fixes: Array.from(tr.querySelectorAll('.wh-fix')).map(function(b) { return b.getAttribute('data-fix'); }),
		enabled: toggle ? toggle.checked : null, toggle_disabled: toggle ? toggle.disabled : null,
		deletable: !!tr.querySelector('.wh-delete'),
		elements_in_label: tr.querySelector('.wh-label') ? tr.querySelector('.wh-label').children.length : null
	};
});
"""

EX = "#wh-exemptions-table"
RD = "#wh-redirects-table"


class Page:
    def __init__(self, browser, lab, user="root", path="admin/network/wormhole", ready="#wh-exemptions-table"):
        self.b = browser
        self.lab = lab
        self.b.get(lab.host.page_url(path, user))
        self.b.wait(lambda: self.b.find_all(ready), "the page to render %s" % ready)

    # -- reading ------------------------------------------------------------------------

    def rows(self, table=EX):
        return self.b.js(ROWS_JS, table)

    def row(self, entry_id, table=EX):
        for r in self.rows(table):
            if r["id"] == entry_id:
                return r
        return None

    # Read in one script call: live refresh may replace an element between two calls.
    def visible(self, css):
        return self.b.js("var e = document.querySelector(arguments[0]);"
                         "return !!(e && e.getClientRects().length);", css)

    def text(self, css):
        """The text of an element as the page wrote it (textContent: a theme may restyle it,
        e.g. bootstrap shows .label in capitals)."""
        return self.b.js("var e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)

    def modal_open(self):
        return self.b.js("return document.body.classList.contains('modal-overlay-active')"
                         " && !!document.querySelector('#wh-modal')")

    def field_error(self, scope="#wh-modal"):
        """(code, field, headline, detail, elements in the detail) of the error shown in a
        modal or the settings, on a field or above them; None when there is none."""
        return self.b.js("""
			var scope = document.querySelector(arguments[0]);
			if (!scope) return null;
			var box = scope.closest('.modal, #wh-settings') || scope;
			var shown = Array.from(box.querySelectorAll('.wh-field-error, .wh-modal-error, .wh-settings-error'))
				.filter(function(e) { return e.style.display != 'none'; })[0];
			if (!shown) return null;
			var row = shown.closest('.cbi-value'), detail = shown.querySelector('.wh-error-detail');
			return [shown.getAttribute('data-code'), row ? row.getAttribute('data-name') : shown.getAttribute('data-field'),
			        shown.querySelector('strong').textContent, detail ? detail.textContent : null,
			        detail ? detail.children.length : null];
		""", scope)

    def invalid_fields(self, scope="#wh-modal"):
        return self.b.js("""return Array.from(document.querySelectorAll(arguments[0] + ' .cbi-input-invalid'))
			.map(function(e) { return e.closest('.cbi-value').getAttribute('data-name'); })""", scope)

    # -- acting -------------------------------------------------------------------------

    def click(self, css, attempts=5):
        """Click what `css` finds; find it again if live refresh replaced it meanwhile."""
        for i in range(attempts):
            try:
                return self.b.click(self.b.find(css))
            except WebDriverError as e:
                if "stale element" not in str(e) or i == attempts - 1:
                    raise

    # The modal and the settings hold their fields in tabs: a field on a hidden tab is
    # reached the way a user does, by its tab first.
    SHOW_TAB_JS = """
		var row = document.querySelector(arguments[0] + ' .cbi-value[data-name="' + arguments[1] + '"]');
		var pane = row && row.closest('[data-tab]');
		if (pane && pane.getAttribute('data-tab-active') != 'true')
			pane.parentNode.parentNode.querySelector('.cbi-tabmenu li[data-tab="' + pane.getAttribute('data-tab') + '"] a').click();
		return !!row;
	"""

    def field(self, name, scope="#wh-modal"):
        assert self.b.js(self.SHOW_TAB_JS, scope, name), "no field %s in %s" % (name, scope)
        return self.b.find('%s .cbi-value[data-name="%s"] input:not([type=hidden]), %s .cbi-value[data-name="%s"] select'
                           % (scope, name, scope, name))

    def value(self, name, scope="#wh-modal"):
        el = self.field(name, scope)
        return self.b.js("var e = arguments[0]; return e.type == 'checkbox' ? e.checked : e.value;",
                         webdriver.ElementRef(el))

    def fill(self, name, text, scope="#wh-modal"):
        el = self.field(name, scope)
        self.b.clear(el)
        if text:
            self.b.type(el, text)
        return el

    def select(self, name, value, scope="#wh-modal"):
        self.field(name, scope)
        self.b.js("var s = document.querySelector(arguments[0]); s.value = arguments[1];"
                  "s.dispatchEvent(new Event('change'));", '%s .cbi-value[data-name="%s"] select' % (scope, name), value)

    def check(self, name, on, scope="#wh-modal"):
        el = self.field(name, scope)
        if self.b.prop(el, "checked") != on:
            self.b.click(el)

    def add_items(self, name, items, scope="#wh-modal"):
        """Type each item into a dynamic list and press Enter, as a user adds them."""
        el = self.field(name, scope)
        for item in items:
            self.b.type(el, item + webdriver.ENTER)

    def remove_item(self, name, value, scope="#wh-modal"):
        """Click an item of a dynamic list: LuCI removes it."""
        self.field(name, scope)
        # a click event on the item, as upstream's handler reads it (a theme may draw the
        # remove mark over the item, where WebDriver's hit test would refuse the click)
        assert self.b.js("""var items = document.querySelectorAll(arguments[0] + ' .cbi-value[data-name="' + arguments[1] + '"] .item');
			for (var i = 0; i < items.length; i++)
				if (items[i].querySelector('input[type=hidden]').value === arguments[2]) {
					items[i].dispatchEvent(new MouseEvent('click', { bubbles: true }));
					return true;
				}
			return false;""", scope, name, value), "no item %s in %s" % (value, name)

    def list_items(self, name, scope="#wh-modal"):
        return self.b.js("""return Array.from(document.querySelectorAll(arguments[0] + ' .cbi-value[data-name="' +
			arguments[1] + '"] .item > input[type=hidden]')).map(function(i) { return i.value; })""", scope, name)

    def open_add(self, kind):
        self.click("#wh-add-" + kind)
        self.b.wait(self.modal_open, "the add dialog")

    def open_edit(self, entry_id, table=EX):
        self.click("%s tr[data-id='%s'] .wh-edit" % (table, entry_id))
        self.b.wait(self.modal_open, "the edit dialog")

    def save(self):
        self.click("#wh-modal-save")

    def saved(self, what):
        """Wait until the dialog closed after a save."""
        self.b.wait(lambda: not self.modal_open(), what)

    def modal_failed(self, what):
        """Wait for a save to be refused: the dialog stays, its error shown."""
        return self.b.wait(lambda: self.modal_open() and self.field_error(), what)

    # -- waiting ------------------------------------------------------------------------

    def wait_rows(self, predicate, what, table=EX, timeout=20):
        """Wait until predicate(rows) holds; returns those rows."""
        seen = []

        def check():
            seen[:] = [self.rows(table)]
            return predicate(seen[0])
        self.b.wait(check, what, timeout=timeout)
        return seen[0]

    def wait_polls(self, n=2):
        """Let the page's live refresh run `n` more times (the host counts its list calls)."""
        ubus = self.lab.host.ubus
        start = ubus.count("wormhole.list")
        assert ubus.wait_count("wormhole.list", start + n, timeout=30), "the page stopped polling"

    # -- checks and pictures --------------------------------------------------------------

    def problems(self):
        """Uncaught script errors and dialogs the page opened (an XSS would alert)."""
        return self.b.js("return {errors: window.__errors, alerts: window.__alerts}")

    def assert_clean(self):
        assert self.problems() == {"errors": [], "alerts": []}, self.problems()

    def screenshot(self, name):
        os.makedirs(SCREENSHOTS, exist_ok=True)
        path = self.b.screenshot(os.path.join(SCREENSHOTS, name))
        if os.environ.get("WORMHOLE_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(os.path.join(SCREENSHOTS, name), os.path.join(DOC_SCREENSHOTS, name))
        return path

"""The Inbound Services page as a user sees it: rows, forms, banners, with waits."""

import os
import shutil

from tests import support
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
		status_text: cell('status'),
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
        return self.b.js("var e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)

    def form_error(self, form="#wh-exemption-form"):
        """(code, field, text) of the error shown under a form, or None when hidden."""
        return self.b.js("""
			var e = document.querySelector(arguments[0] + ' .wh-form-error');
			if (!e || e.style.display == 'none') return null;
			return [e.getAttribute('data-code'), e.getAttribute('data-field'), e.textContent, e.children.length];
		""", form)

    # -- acting -------------------------------------------------------------------------

    def click(self, css, attempts=5):
        """Click what `css` finds; find it again if live refresh replaced it meanwhile."""
        for i in range(attempts):
            try:
                return self.b.click(self.b.find(css))
            except WebDriverError as e:
                if "stale element" not in str(e) or i == attempts - 1:
                    raise

    def field(self, name, form="#wh-exemption-form"):
        return self.b.find("%s [name=%s]" % (form, name))

    def fill(self, name, text, form="#wh-exemption-form"):
        el = self.field(name, form)
        self.b.clear(el)
        if text:
            self.b.type(el, text)
        return el

    def select(self, name, value, form="#wh-exemption-form"):
        self.b.js("var s = document.querySelector(arguments[0]); s.value = arguments[1];"
                  "s.dispatchEvent(new Event('change'));", "%s [name=%s]" % (form, name), value)

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
        assert self.problems() == {"errors": [], "alerts": []}

    def screenshot(self, name):
        os.makedirs(SCREENSHOTS, exist_ok=True)
        path = self.b.screenshot(os.path.join(SCREENSHOTS, name))
        if os.environ.get("WORMHOLE_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(os.path.join(SCREENSHOTS, name), os.path.join(DOC_SCREENSHOTS, name))
        return path

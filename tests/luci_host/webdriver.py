"""A minimal W3C WebDriver client for Debian's chromedriver + chromium, stdlib only.

Chosen over a Python browser-automation package so the browser tests need nothing from
a registry beyond Debian's `chromium` and `chromium-driver` (built from one source, so
their versions always match) and nothing is ever downloaded at run time.
"""

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
ENTER = "\ue007"

FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--disable-extensions",
    "--disable-default-apps", "--force-device-scale-factor=1", "--hide-scrollbars", "--lang=en-US",
]


class WebDriverError(AssertionError):
    pass


def missing():
    """Why a browser cannot be started here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return "needs %s (Debian packages chromium and chromium-driver)" % path
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One chromedriver process with one headless Chromium session."""

    def __init__(self, width=1200, height=900):
        self.profile = tempfile.mkdtemp(prefix="wh-chromium-")
        self.port = _free_port()
        self.log = open(os.path.join(self.profile, "chromedriver.log"), "w")
        self.proc = subprocess.Popen([CHROMEDRIVER, "--port=%d" % self.port], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.session = None
        try:
            self._wait_ready()
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "unhandledPromptBehavior": "accept",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": FLAGS + ["--window-size=%d,%d" % (width, height),
                                     "--user-data-dir=%s" % os.path.join(self.profile, "profile")],
                },
            }}}
            self.session = self._req("POST", "/session", caps)["sessionId"]
        except BaseException:
            self.quit()
            raise

    # -- protocol ------------------------------------------------------------------------

    def _wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WebDriverError("chromedriver exited with %s" % self.proc.returncode)
            try:
                if (self._req("GET", "/status") or {}).get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise WebDriverError("chromedriver did not become ready")

    def _req(self, method, path, body=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body) if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            payload = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        value = payload.get("value") if isinstance(payload, dict) else None
        if resp.status != 200:
            err = value if isinstance(value, dict) else {}
            raise WebDriverError("%s %s: %s: %s" % (method, path, err.get("error"), err.get("message")))
        return value

    def _s(self, method, path, body=None):
        return self._req(method, "/session/%s%s" % (self.session, path), body)

    # -- navigation and scripts -------------------------------------------------------------

    def get(self, url):
        self._s("POST", "/url", {"url": url})

    def js(self, script, *args):
        """Run `script` (a function body) with `arguments`; returns its value."""
        return self._s("POST", "/execute/sync", {"script": script, "args": [_wire(a) for a in args]})

    # -- elements -------------------------------------------------------------------------

    def find_all(self, css):
        return [e[ELEMENT] for e in self._s("POST", "/elements", {"using": "css selector", "value": css})]

    def find(self, css):
        found = self.find_all(css)
        if not found:
            raise WebDriverError("no element matches %r" % css)
        return found[0]

    def click(self, el):
        self._s("POST", "/element/%s/click" % el, {})

    def type(self, el, text):
        self._s("POST", "/element/%s/value" % el, {"text": text})

    def clear(self, el):
        self._s("POST", "/element/%s/clear" % el, {})

    def text(self, el):
        return self._s("GET", "/element/%s/text" % el)

    def prop(self, el, name):
        return self._s("GET", "/element/%s/property/%s" % (el, name))

    def displayed(self, el):
        return self._s("GET", "/element/%s/displayed" % el)

    # -- waiting and pictures -------------------------------------------------------------

    def wait(self, predicate, what, timeout=20, interval=0.1):
        """Poll `predicate()` until it returns something truthy; fail naming `what`."""
        deadline = time.monotonic() + timeout
        last_err = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except WebDriverError as e:
                last_err = e
            if time.monotonic() > deadline:
                raise WebDriverError("timed out waiting for %s%s" % (what, " (%s)" % last_err if last_err else ""))
            time.sleep(interval)

    def cdp(self, cmd, params=None):
        """A Chrome DevTools Protocol command through chromedriver."""
        return self._s("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params or {}})

    def screenshot(self, path, width=1200):
        """A PNG of the whole page at `width` CSS pixels, written to `path`."""
        self.cdp("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 600, "deviceScaleFactor": 1, "mobile": False})
        height = int(self.js("return Math.ceil(document.documentElement.scrollHeight)"))
        self.cdp("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": max(300, min(height, 4000)), "deviceScaleFactor": 1, "mobile": False})
        try:
            png = base64.b64decode(self._s("GET", "/screenshot"))
        finally:
            self.cdp("Emulation.clearDeviceMetricsOverride")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        return path

    def quit(self):
        try:
            if self.session:
                self._req("DELETE", "/session/%s" % self.session, timeout=10)
        except (OSError, WebDriverError):
            pass
        self.session = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def _wire(value):
    """Element ids passed to scripts travel as WebDriver element references."""
    if isinstance(value, ElementRef):
        return {ELEMENT: str(value)}
    return value


class ElementRef(str):
    """Mark a string as an element id when passing it to Browser.js()."""

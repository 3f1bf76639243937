"""A minimal W3C WebDriver client for Debian's chromedriver and chromium, over plain HTTP.

Enough for the dashboard tests: open a page, run a script, resize, screenshot.
No selenium: the protocol is a handful of JSON requests (w3.org/TR/webdriver2),
and the fewer test dependencies the better.
"""
from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests

from edge import free_port, wait_until


class Browser:
    """Headless Chromium driven by a chromedriver on a free loopback port."""

    def __init__(self, profile: Path, *, width: int, height: int) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        driver = shutil.which("chromedriver")
        if chromium is None or driver is None:
            raise FileNotFoundError("chromium and chromedriver (Debian: chromium, chromium-driver)")
        self.port = free_port()
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        try:
            wait_until(lambda: requests.get(self.base + "/status", timeout=1).json()["value"]["ready"], 30, 0.1,
                       "chromedriver to be ready")
            options = {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--window-size={width},{height}", f"--user-data-dir={profile}"]}
            caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
            self.session = self._call("POST", "/session", caps, timeout=60)["sessionId"]
        except BaseException:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> Any:
        r = requests.request(method, self.base + path, json=body, timeout=timeout)
        value = r.json()["value"]
        if r.status_code != 200:
            raise RuntimeError(f"webdriver {method} {path}: {value}")
        return value

    def _session(self, method: str, path: str, body: dict | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body: `return ...`) in the page and return its value."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def resize(self, width: int, height: int) -> None:
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def cdp(self, command: str, **params: Any) -> Any:
        """A Chrome DevTools Protocol command (chromedriver's goog/cdp/execute)."""
        return self._session("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    def emulate_phone(self, width: int, height: int) -> None:
        """A phone's viewport (DevTools' device mode): `width` CSS pixels, the page's
        viewport meta honoured, touch. Desktop windows cannot be made this narrow."""
        self.cdp("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=True)
        self.cdp("Emulation.setTouchEmulationEnabled", enabled=True)

    def emulate_desktop(self) -> None:
        self.cdp("Emulation.clearDeviceMetricsOverride")
        self.cdp("Emulation.setTouchEmulationEnabled", enabled=False)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`):
open a page, run JavaScript in it (to click a tab), take a screenshot. The standard library
only: the protocol's messages are JSON, each ended by a NUL byte, on the child's fds 3 and 4.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

#: `(function (root, text) -> element)`: the first leaf element whose text is `text` (lower
#: case), looking into shadow roots too (TensorBoard's dashboards are Polymer elements).
FIND_BY_TEXT = """(function find(root, text) {
  for (const element of root.querySelectorAll('*')) {
    if (element.shadowRoot) {
      const hit = find(element.shadowRoot, text);
      if (hit) return hit;
    }
    if (element.children.length === 0 && element.textContent.trim().toLowerCase() === text) {
      return element;
    }
  }
  return null;
})"""


class BrowserError(Exception):
    """Chromium is missing, closed its pipe, or refused a command; one line."""


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise BrowserError("no chromium (Debian: apt install chromium)")


class Chromium:
    """One headless browser with one page; close() ends it."""

    def __init__(self, width: int = 1500, height: int = 1000) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def onto_fds_3_and_4() -> None:
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self.process = subprocess.Popen(
            [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=onto_fds_3_and_4,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(replies_write)
        self._pending = b""
        self._last_id = 0
        self._session: str | None = None

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one protocol command (on the page once one is open); its result."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if self._session is not None and not method.startswith("Target."):
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._pending:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium closed its pipe during {method}")
                self._pending += chunk
            raw, self._pending = self._pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result["result"].get("value")

    def click_text(self, text: str) -> bool:
        """Click the first element showing `text` (any case); whether there was one."""
        return bool(self.evaluate(
            f"(() => {{ const hit = {FIND_BY_TEXT}(document, {json.dumps(text.lower())});"
            " if (hit) hit.click(); return hit !== null; })()"))

    def screenshot(self, target: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        target.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._commands)
        os.close(self._replies)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

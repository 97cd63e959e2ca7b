"""Pages in headless Chromium (Debian's package; `make test` installs it): what the report's
and the exported notebooks' plots actually draw, offline, from a file:// URL."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


class PlotSvgs(HTMLParser):
    """svg.main-svg elements inside each plotly plot div of a rendered DOM."""

    def __init__(self):
        super().__init__()
        self.plots: list[int] = []   # main-svg count per plot div, in page order
        self._depth = 0              # nesting of divs inside the current plot div

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "div":
            if self._depth:
                self._depth += 1
            elif "plotly-graph-div" in classes:
                self.plots.append(0)
                self._depth = 1
        elif tag == "svg" and self._depth and "main-svg" in classes:
            self.plots[-1] += 1

    def handle_endtag(self, tag):
        if tag == "div" and self._depth:
            self._depth -= 1


# Logged to the console by the page copy, so console.error and promise rejections show in
# Chromium's log (which logs every console message at one level).
_CONSOLE_HOOK = """<script>(function () {
  var error = console.error;
  console.error = function () { console.log("CONSOLE-ERROR " + Array.prototype.join.call(arguments, " "));
                                error.apply(console, arguments); };
  window.addEventListener("unhandledrejection", function (e) { console.log("CONSOLE-ERROR " + e.reason); });
})();</script>"""


def render_in_chromium(page: Path, scratch: Path) -> tuple[str, str]:
    """(dumped DOM, Chromium's log) of `page` opened from a file:// URL in headless Chromium."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run `apt-get install -y chromium` (make test does); "
                    "the report's browser test needs it")
    watched = scratch / f"watched-{page.name}"
    watched.write_text(page.read_text().replace("<head>", "<head>" + _CONSOLE_HOOK, 1))
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
               # Parallel coordinates draw with WebGL: without a GPU only SwiftShader offers it.
               "--enable-unsafe-swiftshader",
               "--disable-background-networking", "--disable-component-update", "--no-first-run",
               f"--user-data-dir={scratch / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
               "--dump-dom", "--virtual-time-budget=10000", watched.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr

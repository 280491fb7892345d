"""Headless Chromium (the Debian `chromium` + `chromium-driver` packages) driven by selenium, for the tests of the
HTML pages. Selenium Manager never runs: the driver and the browser are the system's own. `.ci/run` installs the
packages when /usr/bin/chromium is missing.
"""
from __future__ import annotations

import io
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1300,1000")


def _unbounded_address_space() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


@contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = Options()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # The CLI under test bounds this process's address space (isolation's parent bound); Chromium reserves
        # far more virtual memory than it uses and dies with SIGTRAP under that bound, so the driver and the
        # browser it starts get the hard limit back.
        service = Service(CHROMEDRIVER, popen_kw={"preexec_fn": _unbounded_address_space})
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()


def load(driver: Any, page: Path) -> list[dict[str, Any]]:
    """Open `page` from file:// and return the browser console's entries for it."""
    driver.get_log("browser")  # drop what an earlier page left
    driver.set_window_size(1300, 1000)  # an earlier full-page screenshot grew the window
    driver.get(page.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return driver.get_log("browser")


def rendered_sizes(driver: Any, attribute: str) -> dict[str, tuple[float, float]]:
    """{attribute value: (width, height)} of every element carrying `attribute`, as laid out."""
    return driver.execute_script(
        "const out = {}; for (const e of document.querySelectorAll('[' + arguments[0] + ']')) {"
        " const r = e.getBoundingClientRect(); out[e.getAttribute(arguments[0])] = [r.width, r.height]; }"
        " return out;", attribute)


def full_page_screenshot(driver: Any, out: Path) -> Any:
    """A screenshot of the whole page (the window grown to its height), saved to `out`; returns it as an
    (h, w, 3) array."""
    import numpy as np
    from PIL import Image

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1300, min(int(height) + 120, 12000))
    png = driver.get_screenshot_as_png()
    out.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

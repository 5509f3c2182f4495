"""browser.py: a real browser for the end-to-end tests of the admin page:
headless Chromium from Debian (/usr/bin/chromium) driven by Selenium
(python3-selenium) through chromium-driver, with a fresh profile, no
network features, and downloads into a folder the test chooses.

  drv = browser.start(tmp_dir)        # skips the test when not installed
  browser.shot(drv, "dashboard")      # tests/out/browser/dashboard.png
  drv.quit()
"""

import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "out", "browser")
WINDOW = (1280, 900)
PAGE_TIMEOUT = 20


def start(tmp_dir, width=WINDOW[0], height=WINDOW[1]):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("python3-selenium is not installed (tests/deps.sh installs it)")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("chromium / chromium-driver are not installed (tests/deps.sh installs them)")
    profile = os.path.join(tmp_dir, "profile")
    downloads = os.path.join(tmp_dir, "downloads")
    os.makedirs(downloads, exist_ok=True)
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {
        "download.default_directory": downloads,
        "download.prompt_for_download": False,
    })
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(PAGE_TIMEOUT)
    drv.execute_cdp_cmd("Page.setDownloadBehavior",
                        {"behavior": "allow", "downloadPath": downloads})
    drv.downloads = downloads
    return drv


def shot(drv, name):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name + ".png")
    drv.save_screenshot(path)
    return path


def full_shot(drv, name, width=None):
    """A screenshot of the whole page height (for the docs)."""
    w = width or drv.get_window_size()["width"]
    h = drv.execute_script("return Math.max(document.body.scrollHeight, "
                           "document.documentElement.scrollHeight)")
    old = drv.get_window_size()
    drv.set_window_size(w, min(max(h + 20, 400), 4000))
    try:
        return shot(drv, name)
    finally:
        drv.set_window_size(old["width"], old["height"])


def keep(src, dst):
    """Copy a screenshot into the repository (docs/)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)

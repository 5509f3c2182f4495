"""test_admin_browser.py: the admin page in a real browser (issue 6): headless
Chromium from Debian driven by Selenium (tests/browser/browser.py). Signs
in, reads the dashboard, rotates an App Password through the page (the fake
Gmail accepts the new one, then refuses a wrong one with Google's text),
sends mail through the proxy, finds it in the audit view, exports CSV, and
checks that hostile text (HELO, subject, sender, a user name with CR/LF)
is shown literally and never runs. Screenshots of every page go to
tests/out/browser/.
"""

import csv
import io
import os
import smtplib
import sys
import time

import pytest

from conftest import DEFAULT_ACCOUNT, Account
from test_admin import ADMIN, ADMIN_PW, Admin, add_admin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "browser"))
import browser  # noqa: E402

OPS = "ops@example.com"
OPS_PW = "opsopsopsopsopso"
NEW_PW = "newnewnewnewnewn"
XSS_HELO = '<script>window.__pwned=1</script>"\'helo'
XSS_SUBJECT = '<img src=x onerror="window.__pwned=2"> "double" \'single\' <b>bold</b>'
XSS_SENDER = '"<script>window.__pwned=3</script>"@example.com'
XSS_USER = "mallory\r\n<script>window.__pwned=4</script>"
WAIT = 15


def send(d, sender, subject, helo="printer.lan", rcpt="bob@example.org"):
    s = smtplib.SMTP(d.host, d.port, timeout=10)
    try:
        s.ehlo(helo)
        msg = (f"From: Team <{DEFAULT_ACCOUNT}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
               f"Message-ID: <{time.time_ns()}@test>\r\n\r\nHello.\r\n")
        s.sendmail(sender, [rcpt], msg.encode())
    finally:
        s.quit()


@pytest.fixture
def page_daemon(daemon, gmail):
    d = daemon(accounts=[DEFAULT_ACCOUNT, Account(OPS, password=OPS_PW,
                                                  args=["--daily-limit", "500"])],
               smtp={"default_account": DEFAULT_ACCOUNT}, start=False)
    add_admin(d)
    d.start()
    return d


def test_admin_page_end_to_end(page_daemon, gmail, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    d = page_daemon
    # Some traffic for the dashboard: deliveries on both accounts, and
    # Google's daily-limit refusal on ops@ (the account goes "on hold").
    for i in range(3):
        send(d, DEFAULT_ACCOUNT, f"Nightly report {i}", rcpt=f"r{i}@example.org")
    send(d, OPS, "Disk usage alert")
    gmail.script("MESSAGE", "daily_limit")
    with pytest.raises(smtplib.SMTPDataError):
        send(d, OPS, "Second alert")
    # A failed login whose user name holds CR/LF and markup.
    assert Admin(d).json("POST", "/api/v1/login", {"username": XSS_USER, "password": "x"},
                         auth=False)[0] == 401

    drv = browser.start(str(tmp_path))
    wait = WebDriverWait(drv, WAIT)
    base = f"http://127.0.0.1:{d.admin_port}/"
    try:
        drv.get(base)
        wait.until(EC.visibility_of_element_located((By.ID, "login-form")))
        browser.shot(drv, "login")
        # A wrong password first: the page says so.
        drv.find_element(By.ID, "login-user").send_keys(ADMIN)
        drv.find_element(By.ID, "login-password").send_keys("not it")
        drv.find_element(By.ID, "login-submit").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "login-error"), "wrong"))
        drv.find_element(By.ID, "login-password").send_keys(ADMIN_PW)
        drv.find_element(By.ID, "login-submit").click()

        # Dashboard: both accounts with their status, quota bars and Google's text.
        wait.until(EC.visibility_of_element_located((By.ID, "view-dashboard")))
        wait.until(lambda x: len(x.find_elements(By.CSS_SELECTOR, "#dash-accounts article")) == 2)
        cards = {c.get_attribute("data-account"): c
                 for c in drv.find_elements(By.CSS_SELECTOR, "#dash-accounts article")}
        assert cards[DEFAULT_ACCOUNT].find_element(By.CLASS_NAME, "badge").text == "ok"
        assert "3 / 2000" in cards[DEFAULT_ACCOUNT].text
        assert cards[OPS].find_element(By.CLASS_NAME, "badge").text == "on hold"
        assert "Daily user sending limit exceeded" in cards[OPS].text
        # The session cookie is out of the page's reach (HttpOnly).
        assert "smtpvault_session" not in drv.execute_script("return document.cookie")
        browser.shot(drv, "dashboard")
        docs_dashboard = browser.full_shot(drv, "dashboard-full")

        # Accounts: rotate through the page; the upstream accepts the new one.
        drv.get(base + "#accounts")
        wait.until(EC.visibility_of_element_located((By.ID, "view-accounts")))
        row = wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, f'#accounts-table tr[data-account="{DEFAULT_ACCOUNT}"]')))
        row.find_element(By.XPATH, ".//button[text()='Rotate']").click()
        gmail.passwords[DEFAULT_ACCOUNT] = NEW_PW
        drv.find_element(By.ID, "rotate-password").send_keys("zzzz zzzz zzzz zzzz")
        drv.find_element(By.ID, "rotate-submit").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "rotate-result"), "refused"))
        assert "5.7.8" in drv.find_element(By.ID, "rotate-result").text
        browser.shot(drv, "rotate-refused")
        drv.find_element(By.ID, "rotate-password").send_keys(NEW_PW)
        drv.find_element(By.ID, "rotate-submit").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "rotate-result"),
                                                    "credential version 2"))
        assert "235 2.7.0 Accepted" in drv.find_element(By.ID, "rotate-result").text
        browser.shot(drv, "accounts")

        # Mail through the proxy uses the rotated password; hostile text too.
        send(d, DEFAULT_ACCOUNT, "After rotation")
        assert gmail.auth_attempts[-1].password == NEW_PW
        # The upstream client will not put this sender on the wire (501), but
        # the attempt is audited with every field as the client sent it.
        with pytest.raises(smtplib.SMTPDataError):
            send(d, XSS_SENDER, XSS_SUBJECT, helo=XSS_HELO)

        # Audit: the message is there, hostile text shown literally.
        drv.get(base + "#audit")
        wait.until(EC.visibility_of_element_located((By.ID, "view-audit")))
        drv.find_element(By.ID, "f-event").send_keys("message")
        drv.find_element(By.ID, "audit-apply").click()
        wait.until(lambda x: "After rotation" in x.find_element(By.ID, "audit-table").text)
        subjects = [c.text for c in drv.find_elements(By.CSS_SELECTOR, "#audit-table td.subject")]
        senders = [c.text for c in drv.find_elements(By.CSS_SELECTOR, "#audit-table td.sender")]
        assert subjects[0] == XSS_SUBJECT
        assert senders[0] == XSS_SENDER
        assert "After rotation" in subjects
        # Expand the newest row: its full record, HELO included, as text.
        drv.find_element(By.CSS_SELECTOR, "#audit-table tr.entry").click()
        detail = wait.until(EC.visibility_of_element_located(
            (By.CSS_SELECTOR, "#audit-table tr.detail pre")))
        assert '"helo": "<script>window.__pwned=1</script>\\"\'helo"' in detail.text
        browser.shot(drv, "audit")
        docs_audit = browser.full_shot(drv, "audit-full")
        # The admin event with CR/LF in the user name: escaped in the record.
        drv.find_element(By.ID, "f-event").send_keys("admin")
        drv.find_element(By.ID, "audit-apply").click()
        wait.until(lambda x: "mallory" in x.find_element(By.ID, "audit-table").text)
        for row in drv.find_elements(By.CSS_SELECTOR, "#audit-table tr.entry"):
            if "mallory" in row.text:
                row.click()
        details = [e.get_attribute("textContent")
                   for e in drv.find_elements(By.CSS_SELECTOR, "#audit-table tr.detail pre")]
        assert any('mallory\\r\\n<script>window.__pwned=4</script>' in t for t in details)
        # Nothing ran, nothing became markup.
        assert drv.execute_script("return window.__pwned") is None
        assert drv.find_elements(By.CSS_SELECTOR, "#audit-table img, #audit-table script, "
                                 "#audit-table b") == []

        # CSV export of the current filter (event=message).
        drv.find_element(By.ID, "f-event").send_keys("message")
        drv.find_element(By.ID, "audit-apply").click()
        wait.until(lambda x: "After rotation" in x.find_element(By.ID, "audit-table").text)
        assert "event=message" in drv.find_element(By.ID, "audit-csv").get_attribute("href")
        drv.find_element(By.ID, "audit-csv").click()
        path = os.path.join(drv.downloads, "smtpvault-audit.csv")
        deadline = time.monotonic() + WAIT
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(io.StringIO(f.read())))
        assert {r["event"] for r in rows} == {"message"}
        assert any(r["subject"] == "After rotation" for r in rows)
        assert any(r["subject"] == XSS_SUBJECT and r["helo"] == XSS_HELO for r in rows)

        # Queue (direct mode: empty, and says why).
        drv.get(base + "#queue")
        wait.until(EC.text_to_be_present_in_element((By.ID, "queue-note"), "direct"))
        browser.shot(drv, "queue")

        # Phone width: the dashboard still fits.
        drv.set_window_size(390, 844)
        drv.get(base + "#dashboard")
        wait.until(lambda x: len(x.find_elements(By.CSS_SELECTOR, "#dash-accounts article")) == 2)
        assert drv.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1")
        browser.shot(drv, "dashboard-phone")

        # Sign out: back to the login form, the API refuses the old session.
        drv.set_window_size(*browser.WINDOW)
        drv.find_element(By.ID, "logout").click()
        wait.until(EC.visibility_of_element_located((By.ID, "login-form")))
        if os.environ.get("SMTPVAULT_UPDATE_DOCS") == "1":
            browser.keep(docs_dashboard, os.path.join(browser.REPO_ROOT, "docs", "dashboard.png"))
            browser.keep(docs_audit, os.path.join(browser.REPO_ROOT, "docs", "audit.png"))
        # The page made no request the CSP had to block.
        logs = [e for e in drv.get_log("browser")
                if "Content Security Policy" in e.get("message", "")]
        assert logs == []
    finally:
        drv.quit()

"""test_admin_queue.py: the queue through the admin API and page (SPEC
section 8, issues 5 and 6) with delivery = queue.

The fake Gmail answers 451 4.3.0 to keep a message deferred (a 30-second
retry schedule, so that only an operator's retry brings the next attempt
forward) or 554 5.6.0 to fail it. GET /api/v1/queue lists what the queue
holds with the same fields as `smtpvault queue list --json`, never the
message bytes; POST /queue/{id}/retry makes a message due now; DELETE
/queue/{id} removes it and the queue audits it as "deleted from the queue
by admin:USER (IP)". Unknown ids get 404, no session 401, no CSRF token
403. /metrics and the dashboard show the depth, and an account the queue
holds is "on hold" with the queue's reason. The last test drives the
queue page in a real browser (skipped without Chromium).
"""

import json
import os
import re
import sys
import time

import pytest

from conftest import DEFAULT_ACCOUNT, DEFAULT_PASSWORD, Account
from test_admin import ADMIN, ADMIN_PW, Admin, add_admin
from test_queue import audit_events, body, send_ok, spool_files, wait_delivered, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "browser"))
import browser  # noqa: E402

OTHER = "ops@example.com"
OTHER_PASSWORD = "qrstuvwxyzabcdef"
SECRET_BODY = "Body text that the queue view must never show."
QUEUE_SMTP = {"delivery": "queue", "max_recipients": "200"}
SLOW_RETRY = {"retry_schedule": "30s", "timeout": "2s"}
ENTRY_KEYS = {"id", "account", "from", "rcpts", "rcpt_count", "size", "received", "age",
              "attempts", "next_attempt", "status", "last_reply", "hold_reason"}
UNKNOWN_ID = "ZZZZZZZZZZZZZZZZ"
WAIT = 15.0


def secret_body(msgid):
    return (f"From: Team <{DEFAULT_ACCOUNT}>\r\nTo: Bob <bob@example.org>\r\n"
            f"Subject: queued for the admin\r\nMessage-ID: <{msgid}>\r\n\r\n"
            f"{SECRET_BODY}\r\n").encode()


def fix(gmail, rule):
    """The fake stops answering with this scripted rule."""
    with gmail._lock:
        rule.count = rule.used


@pytest.fixture
def qadmin(daemon, gmail):
    """A queue-mode daemon (two accounts, slow retries), an admin signed in."""
    d = daemon(accounts=[DEFAULT_ACCOUNT, Account(OTHER, password=OTHER_PASSWORD)],
               smtp=QUEUE_SMTP, upstream=SLOW_RETRY, start=False)
    add_admin(d)
    d.start()
    a = Admin(d)
    status, _, payload = a.login()
    assert status == 200, payload
    return d, a


def api_queue(a):
    status, headers, payload = a.request("GET", "/api/v1/queue")
    assert status == 200, payload
    assert headers["Cache-Control"] == "no-store"
    return json.loads(payload), payload


def entries(a):
    return {e["id"]: e for e in api_queue(a)[0]["messages"]}


def wait_status(a, qid, status, timeout=WAIT):
    return wait_for(lambda: entries(a).get(qid, {}).get("status") == status and entries(a)[qid],
                    timeout=timeout, what=f"{qid} {status}")


def metrics_depth(d):
    status, _, payload = Admin(d).request("GET", "/metrics", auth=False)
    assert status == 200
    m = re.search(r"^smtpvault_queue_depth (\d+)$", payload.decode(), re.M)
    assert m, payload
    return int(m.group(1))


def cli_list(d):
    rc, out, err = d.cli("queue", "list", "--json")
    assert rc == 0, err
    return {e["id"]: e for e in json.loads(out)}


# ---- the list ----------------------------------------------------------------

def test_list_shows_deferred_and_failed_messages_without_their_bytes(qadmin, gmail):
    d, a = qadmin
    gmail.script("MESSAGE", "temp_rejected")         # 451 4.3.0: deferred for 30 s
    deferred = send_ok(d, "deferred@test.lan", rcpts=("bob@example.org", "carol@example.org"),
                       data=secret_body("deferred@test.lan"))
    wait_status(a, deferred, "deferred")
    gmail.script("MESSAGE", "malformed")             # 554 5.6.0: failed
    failed = send_ok(d, "failed@test.lan", data=secret_body("failed@test.lan"))
    wait_status(a, failed, "failed")

    data, payload = api_queue(a)
    assert data["mode"] == "queue"
    assert data["depth"] == 1                        # failed ones wait for the operator
    assert data["counts"] == {"active": 0, "deferred": 1, "held": 0, "failed": 1}
    assert data["truncated"] is False
    assert [e["id"] for e in data["messages"]] == [deferred, failed]    # oldest first
    e = data["messages"][0]
    assert set(e) == ENTRY_KEYS, e
    assert e["account"] == DEFAULT_ACCOUNT and e["from"] == DEFAULT_ACCOUNT
    assert e["rcpts"] == ["bob@example.org", "carol@example.org"] and e["rcpt_count"] == 2
    assert e["size"] >= len(secret_body("deferred@test.lan")) and e["age"] >= 0
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", e["received"]), e
    assert e["attempts"] == 1 and e["status"] == "deferred"
    assert e["next_attempt"] > e["received"]         # RFC 3339 UTC sorts as text
    assert e["last_reply"].startswith("451 4.3.0"), e
    assert e["hold_reason"] is None
    f = data["messages"][1]
    assert f["status"] == "failed" and f["next_attempt"] is None
    assert f["attempts"] == 1 and f["last_reply"].startswith("554 5.6.0"), f
    # The same view as the queue command's.
    cli = cli_list(d)
    for x in data["messages"]:
        c = dict(cli[x["id"]])
        assert {k: v for k, v in x.items() if k not in ("age", "rcpt_count")} == \
            {k: v for k, v in c.items() if k != "age"}
    # Neither the message nor a secret.
    for secret in (SECRET_BODY, "queued for the admin", "deferred@test.lan", DEFAULT_PASSWORD,
                   OTHER_PASSWORD):
        assert secret.encode() not in payload, secret
    # Metrics and dashboard agree.
    assert metrics_depth(d) == 1
    status, accts = a.json("GET", "/api/v1/accounts")
    assert status == 200 and accts["queue"] == {"mode": "queue", "depth": 1}
    acct = {x["address"]: x for x in accts["accounts"]}
    assert acct[DEFAULT_ACCOUNT]["queued"] == 1 and acct[DEFAULT_ACCOUNT]["hold"] is None
    assert acct[OTHER]["queued"] == 0 and acct[OTHER]["status"] == "ok"


# ---- retry -------------------------------------------------------------------

def test_retry_makes_a_deferred_message_due_and_brings_a_failed_one_back(qadmin, gmail):
    d, a = qadmin
    rule = gmail.script("MESSAGE", "temp_rejected", count=None)
    qid = send_ok(d, "retry-me@test.lan")
    e = wait_status(a, qid, "deferred")
    assert e["attempts"] == 1
    assert metrics_depth(d) == 1
    # Fixed upstream; the next attempt is still half a minute away.
    fix(gmail, rule)
    time.sleep(1.5)
    assert gmail.delivered == [] and entries(a)[qid]["status"] == "deferred"
    status, data = a.json("POST", f"/api/v1/queue/{qid}/retry")
    assert status == 200 and data == {"id": qid, "retried": True}, data
    wait_delivered(gmail, "retry-me@test.lan", timeout=10)
    wait_for(lambda: api_queue(a)[0]["messages"] == [], what="an empty queue")
    assert metrics_depth(d) == 0
    evs = wait_for(lambda: len(audit_events(d, qid)) == 3 and audit_events(d, qid),
                   what="three events")
    assert [x["status"] for x in evs] == ["queued", "deferred", "delivered"]
    assert re.search(rf"event=admin_queue_retry queue_id={qid} by=admin:{ADMIN} "
                     r"ip=127\.0\.0\.1", d.log())
    # A failed message goes back to the queue and out.
    gmail.script("MESSAGE", "malformed")
    failed = send_ok(d, "failed-then-retried@test.lan")
    wait_status(a, failed, "failed")
    assert a.json("POST", f"/api/v1/queue/{failed}/retry")[0] == 200
    wait_delivered(gmail, "failed-then-retried@test.lan")
    assert [x["status"] for x in wait_for(lambda: len(audit_events(d, failed)) == 3 and
                                          audit_events(d, failed), what="three events")] == \
        ["queued", "failed", "delivered"]
    wait_for(lambda: spool_files(d) == [] and spool_files(d, "failed") == [],
             what="an empty spool")


# ---- delete ------------------------------------------------------------------

def test_delete_removes_the_message_and_is_audited(qadmin, gmail):
    d, a = qadmin
    rule = gmail.script("MESSAGE", "temp_rejected", count=None)
    gone = send_ok(d, "delete-me@test.lan")
    kept = send_ok(d, "keep-me@test.lan")
    wait_status(a, gone, "deferred")
    wait_status(a, kept, "deferred")
    assert gone in spool_files(d)
    status, data = a.json("DELETE", f"/api/v1/queue/{gone}")
    assert status == 200 and data == {"id": gone, "deleted": True}, data
    # Gone from the list, the spool and the depth; audited with who and where.
    assert gone not in entries(a) and kept in entries(a)
    assert gone not in spool_files(d) and gone + ".st" not in spool_files(d)
    assert metrics_depth(d) == 1
    ev = audit_events(d, gone)[-1]
    assert ev["status"] == "failed", ev
    assert f"deleted from the queue by admin:{ADMIN} (127.0.0.1)" in ev["upstream_reply"], ev
    # Twice: nothing left to delete or retry.
    assert a.json("DELETE", f"/api/v1/queue/{gone}")[0] == 404
    assert a.json("POST", f"/api/v1/queue/{gone}/retry")[0] == 404
    # A failed message can be deleted too.
    fix(gmail, rule)
    gmail.script("MESSAGE", "malformed")
    failed = send_ok(d, "failed-then-deleted@test.lan")
    wait_status(a, failed, "failed")
    assert a.json("DELETE", f"/api/v1/queue/{failed}")[0] == 200
    assert failed not in spool_files(d, "failed") and failed not in entries(a)
    assert "by admin:" in audit_events(d, failed)[-1]["upstream_reply"]
    # The other one still goes out; the deleted ones never do.
    assert a.json("POST", f"/api/v1/queue/{kept}/retry")[0] == 200
    wait_delivered(gmail, "keep-me@test.lan")
    time.sleep(0.5)
    ids = [m.data for m in gmail.delivered]
    assert not any(b"delete-me@test.lan" in x or b"failed-then-deleted" in x for x in ids)


# ---- refusals ----------------------------------------------------------------

def test_unknown_ids_sessions_and_csrf(qadmin, gmail):
    d, a = qadmin
    gmail.script("MESSAGE", "temp_rejected", count=None)
    qid = send_ok(d, "guarded@test.lan")
    wait_status(a, qid, "deferred")
    # Unknown or malformed ids: 404 with a JSON error.
    for path in (UNKNOWN_ID, "not-an-id", "..%2F..%2Fetc%2Fpasswd", "%C3%A9%C3%A9", "A" * 40):
        for method, url in (("POST", f"/api/v1/queue/{path}/retry"),
                            ("DELETE", f"/api/v1/queue/{path}")):
            status, data = a.json(method, url)
            assert status == 404 and isinstance(data.get("error"), str), (method, url, data)
    # No session: 401 on every queue route.
    anon = Admin(d)
    assert anon.json("GET", "/api/v1/queue")[0] == 401
    assert anon.json("POST", f"/api/v1/queue/{qid}/retry")[0] == 401
    assert anon.json("DELETE", f"/api/v1/queue/{qid}")[0] == 401
    # A session without its CSRF token, with a wrong one, or from another site: 403.
    assert a.json("POST", f"/api/v1/queue/{qid}/retry", csrf=False)[0] == 403
    assert a.json("DELETE", f"/api/v1/queue/{qid}", csrf=False)[0] == 403
    assert a.json("DELETE", f"/api/v1/queue/{qid}", csrf=False,
                  headers={"X-CSRF-Token": "0" * 64})[0] == 403
    assert a.json("DELETE", f"/api/v1/queue/{qid}",
                  headers={"Origin": "http://evil.example"})[0] == 403
    # None of it touched the message.
    e = entries(a)[qid]
    assert e["status"] == "deferred" and e["attempts"] == 1
    assert [x["status"] for x in audit_events(d, qid)] == ["queued", "deferred"]
    assert "admin_queue_retry" not in d.log()


# ---- dashboard: holds --------------------------------------------------------

def test_dashboard_shows_accounts_the_queue_holds(daemon, gmail):
    d = daemon(accounts=[Account(DEFAULT_ACCOUNT, args=["--daily-limit", "1"]),
                         Account(OTHER, password="wrongwrongwrongw",
                                 upstream_password=OTHER_PASSWORD)],
               smtp=QUEUE_SMTP, upstream=SLOW_RETRY, start=False)
    add_admin(d)
    d.start()
    a = Admin(d)
    assert a.login()[0] == 200
    send_ok(d, "quota-1@test.lan")
    wait_delivered(gmail, "quota-1@test.lan")
    over = send_ok(d, "quota-2@test.lan")            # over the daily limit of 1
    refused = send_ok(d, "refused@test.lan", data=body("refused@test.lan", frm=OTHER),
                      frm=OTHER)
    wait_status(a, over, "held")
    wait_status(a, refused, "held")

    def both_held():
        status, data = a.json("GET", "/api/v1/accounts")
        assert status == 200
        acct = {x["address"]: x for x in data["accounts"]}
        return acct[DEFAULT_ACCOUNT]["hold"] and acct[OTHER]["hold"] and (data, acct)
    data, acct = wait_for(both_held, what="both accounts on hold")
    assert data["queue"] == {"mode": "queue", "depth": 2}
    quota = acct[DEFAULT_ACCOUNT]
    assert quota["status"] == "on_hold", quota
    assert quota["hold"]["messages"] == 1 and quota["queued"] == 1
    assert "daily limit of 1 messages" in quota["hold"]["reason"], quota
    cred = acct[OTHER]
    # A refused credential is flagged as such; the hold says what the queue does.
    assert cred["status"] in ("failing_credential", "on_hold"), cred
    assert "credential" in cred["hold"]["reason"] and cred["hold"]["messages"] == 1, cred
    assert metrics_depth(d) == 2


# ---- the page ----------------------------------------------------------------

def test_queue_page_lists_retries_and_deletes(qadmin, gmail, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    d, a = qadmin
    rule = gmail.script("MESSAGE", "temp_rejected", count=None)
    keep = send_ok(d, "page-keep@test.lan", data=secret_body("page-keep@test.lan"))
    drop = send_ok(d, "page-drop@test.lan")
    gmail.fail_auth(OTHER)                           # 535: the queue holds ops@
    held = send_ok(d, "page-held@test.lan", data=body("page-held@test.lan", frm=OTHER),
                   frm=OTHER)
    wait_status(a, keep, "deferred")
    wait_status(a, drop, "deferred")
    wait_status(a, held, "held")

    drv = browser.start(str(tmp_path))
    wait = WebDriverWait(drv, WAIT)
    base = f"http://127.0.0.1:{d.admin_port}/"
    try:
        drv.get(base)
        wait.until(EC.visibility_of_element_located((By.ID, "login-form")))
        drv.find_element(By.ID, "login-user").send_keys(ADMIN)
        drv.find_element(By.ID, "login-password").send_keys(ADMIN_PW)
        drv.find_element(By.ID, "login-submit").click()
        # Dashboard: the depth, and ops@ on hold with the queue's reason.
        wait.until(lambda x: len(x.find_elements(By.CSS_SELECTOR, "#dash-accounts article")) == 2)
        assert "3" in drv.find_element(By.ID, "dash-tiles").text
        card = drv.find_element(By.CSS_SELECTOR, f'#dash-accounts article[data-account="{OTHER}"]')
        assert "On hold" in card.text and "refused credential version 1" in card.text
        assert "1 message waiting" in card.text
        browser.shot(drv, "dashboard-queue-hold")
        # Queue: the three messages, with their reasons.
        drv.get(base + "#queue")
        wait.until(EC.text_to_be_present_in_element((By.ID, "queue-note"), "3 messages waiting"))
        rows = {r.get_attribute("data-id"): r
                for r in drv.find_elements(By.CSS_SELECTOR, "#queue-table tbody tr")}
        assert set(rows) == {keep, drop, held}
        text = rows[keep].text
        assert DEFAULT_ACCOUNT in text and "bob@example.org" in text
        assert "deferred" in text and "451 4.3.0" in text
        assert "held" in rows[held].text and "refused credential" in rows[held].text
        assert "535" in rows[held].text
        assert SECRET_BODY not in drv.page_source
        browser.shot(drv, "queue-deferred")
        # Delete (confirmed): the row goes.
        rows[drop].find_element(By.XPATH, ".//button[text()='Delete']").click()
        wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
        drv.find_element(By.ID, "confirm-yes").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "flash"), "Deleted " + drop))
        wait.until(lambda x: len(x.find_elements(By.CSS_SELECTOR, "#queue-table tbody tr")) == 2)
        assert drop not in entries(a)
        # Retry with the upstream fixed: delivered, the queue empties.
        fix(gmail, rule)
        row = drv.find_element(By.CSS_SELECTOR, f'#queue-table tr[data-id="{keep}"]')
        row.find_element(By.XPATH, ".//button[text()='Retry']").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "flash"), "Retrying " + keep))
        wait_delivered(gmail, "page-keep@test.lan")
        wait_for(lambda: list(entries(a)) == [held], what="only the held message left")
        drv.get(base + "#dashboard")
        drv.get(base + "#queue")
        wait.until(EC.text_to_be_present_in_element((By.ID, "queue-note"), "1 message waiting"))
        assert len(drv.find_elements(By.CSS_SELECTOR, "#queue-table tbody tr")) == 1
        assert drv.execute_script("return window.__pwned") is None
        browser.shot(drv, "queue-after")
    finally:
        drv.quit()

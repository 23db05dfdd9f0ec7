"""The dashboard in a real browser: headless Chromium (Debian's chromium +
chromium-driver) against `upkeep demo --keep` (simulator + daemon in one process,
sharing one clock).

Story: the sign-in link from the demo opens the dashboard signed in; the badge is
green; the Market-data feed card shows the demo's consumer and live ticks through the
relay, and a price changes while we watch; the simulator's clock jumps past 03:30 IST: the badge turns red (EXPIRED) with
the critical banner; "Renew now" brings it back to green. Screenshots go to
$UPKEEP_BROWSER_OUT (default target/browser-test).

Run: UPKEEP_BIN=target/debug/upkeep python tests/browser/test_dashboard.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BIN = os.environ.get("UPKEEP_BIN", "target/debug/upkeep")
OUT = os.environ.get("UPKEEP_BROWSER_OUT", "target/browser-test")
CHROMIUM = os.environ.get("UPKEEP_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("UPKEEP_CHROMEDRIVER", "/usr/bin/chromedriver")
PATIENCE = 60


def start_demo():
    proc = subprocess.Popen(
        [BIN, "demo", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    urls = {}
    deadline = time.time() + 120
    for line in proc.stdout:
        sys.stdout.write("  demo| " + line)
        for key in ("dashboard", "simulator"):
            if line.startswith(key + ": "):
                urls[key] = line.split(": ", 1)[1].strip()
        if len(urls) == 2 or time.time() > deadline:
            break
    assert len(urls) == 2, "the demo printed no dashboard/simulator line"
    return proc, urls["dashboard"], urls["simulator"]


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1100,900",
        "--user-data-dir=" + profile,
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def badge(driver):
    el = driver.find_element(By.CSS_SELECTOR, "#top-badge-demo")
    return el.get_attribute("data-state"), el.text


def wait_for(driver, what, check):
    try:
        return WebDriverWait(driver, PATIENCE, poll_frequency=0.25).until(lambda d: check(d))
    except Exception as e:  # selenium's TimeoutException, with the page state added
        raise AssertionError(f"gave up waiting for {what}; badge is {badge(driver)}") from e


def ticks(driver):
    """The feed card's latest ticks: key -> (last price, last trade time)."""
    out = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#feed table.ticks tr[data-key]"):
        try:
            out[row.get_attribute("data-key")] = (
                row.find_element(By.CSS_SELECTOR, ".ltp").text,
                row.find_element(By.CSS_SELECTOR, ".ltt").text,
            )
        except Exception:  # the card is redrawn every second: a row may go stale
            pass
    return out


def post_json(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def main():
    os.makedirs(OUT, exist_ok=True)
    proc, dashboard, sim = start_demo()
    profile = tempfile.mkdtemp(prefix="upkeep-chromium-")
    driver = browser(profile)
    try:
        driver.get(dashboard)
        wait_for(driver, "the account card", lambda d: d.find_elements(By.CSS_SELECTOR, "#account-demo"))
        state, text = wait_for(driver, "a green badge", lambda d: badge(d)[0] == "green" and badge(d))
        assert text.startswith("Token: ") and text.endswith("h"), text
        assert not driver.find_elements(By.CSS_SELECTOR, ".banner.critical")
        driver.save_screenshot(os.path.join(OUT, "1-healthy.png"))
        print(f"healthy: badge {text!r}")

        # The demo's consumer streams through the relay: its ticks appear on the
        # dashboard's feed card and change while we watch.
        wait_for(driver, "the feed card", lambda d: d.find_element(By.ID, "feed-card").is_displayed())
        first = wait_for(driver, "live ticks", lambda d: ticks(d).get("NSE_EQ|INE002A01018"))
        assert first[0] not in ("", "-"), first
        consumers = driver.find_element(By.CSS_SELECTOR, "#feed table.consumers").text
        assert "demo-ticker" in consumers, consumers
        states = driver.find_element(By.CSS_SELECTOR, "#feed table.connections").text
        assert "live" in states, states
        changed = wait_for(driver, "a tick that updates",
                           lambda d: (t := ticks(d).get("NSE_EQ|INE002A01018")) and t != first and t)
        driver.save_screenshot(os.path.join(OUT, "1b-feed.png"))
        print(f"feed: RELIANCE {first} -> {changed}, {len(ticks(driver))} instruments")

        # The simulator's clock (shared with the daemon) jumps past the next 03:30 IST.
        with urllib.request.urlopen(sim + "/sim/clock", timeout=10) as resp:
            clock = json.load(resp)
        rollover = datetime.fromisoformat(clock["next_rollover"].replace("Z", "+00:00"))
        after = (rollover + timedelta(seconds=5)).isoformat()
        post_json(sim + "/sim/clock", {"set": after})
        wait_for(driver, "a red EXPIRED badge",
                 lambda d: badge(d) == ("red", "EXPIRED"))
        banner = wait_for(driver, "the critical banner",
                          lambda d: d.find_elements(By.CSS_SELECTOR, ".banner.critical"))
        assert "EXPIRED" in banner[0].text, banner[0].text
        labels = [b.text for b in banner[0].find_elements(By.TAG_NAME, "button")]
        assert labels == ["Renew now", "Log in with Upstox"], labels
        driver.save_screenshot(os.path.join(OUT, "2-expired.png"))
        print("expired: red badge and the critical banner")

        # Renew now (through the session, with its CSRF token) brings it back.
        banner[0].find_element(By.XPATH, ".//button[text()='Renew now']").click()
        state, text = wait_for(driver, "green again", lambda d: badge(d)[0] == "green" and badge(d))
        wait_for(driver, "the banner gone",
                 lambda d: not d.find_elements(By.CSS_SELECTOR, ".banner.critical"))
        result = driver.find_element(By.CSS_SELECTOR, "#account-demo .result").text
        assert result.startswith("Renewed"), result
        driver.save_screenshot(os.path.join(OUT, "3-renewed.png"))
        print(f"renewed: badge {text!r}, {result!r}")
    finally:
        driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("screenshots in " + os.path.abspath(OUT))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Crash-loop check for `upkeep serve` (driven by bench/crash-loop.sh; stdlib only).

Starts `upkeep sim`, writes an upkeep.toml pointing every Upstox URL at it, then runs
N rounds. Each round picks a scenario at random, starts `upkeep serve`, and SIGKILLs it
at a random moment while it works:

  renewal   the current token is revoked at the sim first; the daemon's first health
            check finds it refused and renews at once with TOTP
  webhook   fresh daily tokens are issued at the sim and POSTed, Upstox-shaped, to the
            daemon's /webhooks/upstox/token, several in a row
  oauth     `upkeep login` prints the dialog link; it is followed through the sim's login
            page (mobile, TOTP computed from the seed, PIN) to the daemon's
            /auth/upstox/callback, several times in a row

After each kill: PRAGMA integrity_check on a copy of the database (+ WAL) must say `ok`;
temp files (`.NAME.tmp-<12 hex>`) beside the db/key/sinks are counted (a crash may leave
them; the daemon removes them at start); serve is started again and must give a working
token (`upkeep token` exits 0 and the sim's profile call accepts it) within 60 s, with
both token files holding it and no temp file left; then it is stopped with SIGTERM and
must exit within 15 s. A summary follows; the exit status is 1 if anything failed.
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import html
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

TOKEN_WAIT_S = 60.0  # a working token must appear within this after a restart
TERM_LIMIT_S = 15.0  # serve must exit this soon after SIGTERM
FILES_GRACE_S = 20.0  # token files may lag the working token by this much
KILL_MAX_S = 2.0  # kills land 0..KILL_MAX_S after the scenario starts
TEMP_RE = re.compile(r"^\..+\.tmp-[0-9a-fA-F]{12}$")
ERROR_RE = re.compile(r"\bERROR\b|panicked")
SCENARIOS = ("renewal", "webhook", "oauth")


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- process bookkeeping

class Procs:
    """Every child process we start, so that they are all killed on exit.

    Their pids also go to WORK/pids, which the bash wrapper's trap reads in case this
    interpreter itself dies without running its cleanup."""

    def __init__(self, pid_file):
        self.live = {}
        self.pid_file = pid_file
        self.lock = threading.Lock()

    def _write(self):
        tmp = self.pid_file + ".new"
        with open(tmp, "w") as f:
            f.write("".join(f"{p}\n" for p in self.live))
        os.replace(tmp, self.pid_file)

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        with self.lock:
            self.live[p.pid] = p
            self._write()
        return p

    def forget(self, p):
        with self.lock:
            self.live.pop(p.pid, None)
            self._write()

    def kill_all(self):
        with self.lock:
            procs = list(self.live.values())
        for p in procs:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=5)
            except Exception:
                pass
        with self.lock:
            self.live.clear()
            self._write()


# ---------------------------------------------------------------- small helpers

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def opener(cookies=None):
    handlers = [NoRedirect()]
    if cookies is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(cookies))
    return urllib.request.build_opener(*handlers)


PLAIN = opener()


def request(method, url, body=None, headers=None, form=None, op=PLAIN, timeout=10):
    """Returns (status, headers, body bytes); HTTP errors are answers, not exceptions.
    Connection errors raise OSError (URLError is one)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with op.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except http.client.HTTPException as e:  # e.g. the peer died mid-answer
        raise ConnectionError(repr(e)) from e


def totp_code(secret, epoch_s):
    """RFC 6238: HMAC-SHA1, 30 s step, 6 digits."""
    s = secret.strip().replace(" ", "").upper().rstrip("=")
    key = base64.b32decode(s + "=" * (-len(s) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(epoch_s) // 30), hashlib.sha1).digest()
    off = digest[-1] & 0x0F
    n = struct.unpack(">I", digest[off:off + 4])[0] & 0x7FFFFFFF
    return f"{n % 1_000_000:06d}"


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def temp_files(dirs):
    found = []
    for d in dirs:
        try:
            for name in os.listdir(d):
                if TEMP_RE.match(name) and os.path.isfile(os.path.join(d, name)):
                    found.append(os.path.join(d, name))
        except FileNotFoundError:
            pass
    return sorted(found)


def integrity(db, scratch, sqlite3_cli):
    """PRAGMA integrity_check on a copy of the database and its WAL/journal, so the
    daemon's own next start is what recovers the real files after the crash."""
    if os.path.isdir(scratch):
        shutil.rmtree(scratch)
    os.makedirs(scratch)
    copy = os.path.join(scratch, os.path.basename(db))
    if not os.path.exists(db):
        return "database missing"
    for suffix in ("", "-wal", "-journal"):
        if os.path.exists(db + suffix):
            shutil.copy2(db + suffix, copy + suffix)
    if sqlite3_cli:
        r = subprocess.run([sqlite3_cli, copy, "PRAGMA integrity_check"],
                           capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
    else:
        con = sqlite3.connect(copy)
        try:
            out = "\n".join(row[0] for row in con.execute("PRAGMA integrity_check"))
        except sqlite3.DatabaseError as e:
            out = f"error: {e}"
        finally:
            con.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def fmt(x):
    return "n/a" if x is None else f"{x:.2f}"


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = os.path.abspath(args.work)
        self.procs = Procs(os.path.join(self.work, "pids"))
        self.bin = args.bin
        self.cfg = os.path.join(self.work, "upkeep.toml")
        self.db = os.path.join(self.work, "upkeep.db")
        self.key = os.path.join(self.work, "upkeep.key")
        self.json_sink = os.path.join(self.work, "data", "upstox_tokens.json")
        self.env_sink = os.path.join(self.work, ".env")
        # every folder upkeep writes atomically into
        self.write_dirs = sorted({os.path.dirname(p) for p in
                                  (self.db, self.key, self.json_sink, self.env_sink)})
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.sqlite3_cli = shutil.which("sqlite3")
        self.env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        for k in list(self.env):
            if k.startswith("UPKEEP_") or k.startswith("UPSTOX_"):
                del self.env[k]  # nothing from the caller's shell may override the config
        self.rounds = []
        self.failures = []

    # ---- setup

    def start_sim(self):
        self.sim_port = free_port()
        self.dport = free_port()
        while self.dport == self.sim_port:
            self.dport = free_port()
        self.sim = f"http://127.0.0.1:{self.sim_port}"
        self.daemon = f"http://127.0.0.1:{self.dport}"
        creds = os.path.join(self.work, "sim-credentials.json")
        err = open(os.path.join(self.logs, "sim.stderr"), "w")
        self.sim_proc = self.procs.start(
            [self.bin, "sim", "--listen", f"127.0.0.1:{self.sim_port}",
             "--credentials-out", creds,
             "--redirect-uri", f"{self.daemon}/auth/upstox/callback",
             "--notifier-url", f"{self.daemon}/webhooks/upstox/token"],
            stdout=err, stderr=err, env=self.env, cwd=self.work)
        deadline = time.time() + 30
        while True:
            if self.sim_proc.poll() is not None:
                raise SystemExit(f"upkeep sim exited ({self.sim_proc.returncode}); see {err.name}")
            try:
                with open(creds) as f:
                    self.creds = json.load(f)
                status, _, _ = request("GET", f"{self.sim}/sim/clock", timeout=2)
                if status == 200:
                    break
            except (OSError, ValueError):
                pass
            if time.time() > deadline:
                raise SystemExit("upkeep sim did not come up within 30 s")
            time.sleep(0.1)
        log(f"sim      {self.sim} (user {self.creds['ucc']}, app {self.creds['client_id']})")

    def write_config(self):
        c = self.creds

        def q(s):
            return json.dumps(str(s))  # a TOML basic string is a JSON string here

        text = f"""# written by bench/crash_loop.py
[server]
listen = {q(f"127.0.0.1:{self.dport}")}
public_url = {q(self.daemon)}
shutdown_timeout = "10s"

[store]
url = {q("sqlite://" + self.db)}
key_file = {q(self.key)}

[upstox]
api_url = {q(self.sim)}
order_url = {q(self.sim)}
login_url = {q(self.sim)}

[renewal]
health_check_interval = "10s"

[sinks]
json_file = {q(self.json_sink)}
env_file = {q(self.env_sink)}

[[account]]
id = "main"
env = "live"
client_id = {q(c["client_id"])}
client_secret = {q(c["client_secret"])}
redirect_uri = {q(c["redirect_uri"])}
user_id = {q(c["ucc"])}
renew = ["totp", "token_request", "oauth"]

[account.totp]
mobile = {q(c["mobile"])}
pin = {q(c["pin"])}
secret = {q(c["totp_secret"])}
"""
        fd = os.open(self.cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(self.cfg, 0o600)
        r = self.upkeep("config", "check")
        if r.returncode != 0:
            raise SystemExit(f"upkeep config check failed:\n{r.stdout}{r.stderr}")
        log(f"config   {self.cfg} (config check: OK)")

    # ---- upkeep commands

    def upkeep(self, *argv, timeout=30):
        return subprocess.run([self.bin, "--config", self.cfg, *argv], capture_output=True,
                              text=True, env=self.env, cwd=self.work, timeout=timeout)

    def start_serve(self, name):
        path = os.path.join(self.logs, f"{name}.stderr")
        err = open(path, "w")
        out = open(os.path.join(self.logs, f"{name}.stdout"), "w")
        p = self.procs.start([self.bin, "--config", self.cfg, "serve"], stdout=out,
                             stderr=err, env=self.env, cwd=self.work)
        err.close()
        out.close()
        p.log_path = path
        return p

    def stored_token(self):
        r = self.upkeep("token")
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None

    def profile_ok(self, token):
        try:
            status, _, _ = request("GET", f"{self.sim}/v2/user/profile",
                                headers={"Authorization": f"Bearer {token}",
                                         "Accept": "application/json"}, timeout=5)
            return status == 200
        except OSError:
            return False

    def sink_tokens(self):
        js = env = None
        try:
            with open(self.json_sink) as f:
                js = json.load(f).get("access_token")
        except (OSError, ValueError):
            pass
        try:
            with open(self.env_sink) as f:
                for line in f:
                    m = re.match(r"^\s*(?:export\s+)?UPSTOX_ACCESS_TOKEN\s*=\s*(\S*)", line)
                    if m:
                        env = m.group(1)
        except OSError:
            pass
        return js, env

    def healthz_ok(self):
        try:
            status, _, _ = request("GET", f"{self.daemon}/healthz", timeout=2)
            return status == 200
        except OSError:
            return False

    def wait_working(self, serve, started):
        """Polls until /healthz answers, `upkeep token` gives a token the sim accepts and
        both token files hold it. The token must work within TOKEN_WAIT_S; the files get
        FILES_GRACE_S more after that (longer than a health-check interval), still within
        TOKEN_WAIT_S. Returns the timings (seconds since `started`)."""
        res = {"healthz_s": None, "working_s": None, "files_s": None, "token": None,
               "serve_died": False}
        deadline = started + TOKEN_WAIT_S
        files_deadline = deadline
        while True:
            now = time.monotonic()
            if now >= deadline or now >= files_deadline:
                break
            if serve.poll() is not None:
                res["serve_died"] = True
                break
            if res["healthz_s"] is None and self.healthz_ok():
                res["healthz_s"] = time.monotonic() - started
            tok = self.stored_token()
            if tok and self.profile_ok(tok):
                if res["working_s"] is None:
                    res["working_s"] = time.monotonic() - started
                    files_deadline = min(deadline, time.monotonic() + FILES_GRACE_S)
                res["token"] = tok
                if self.sink_tokens() == (tok, tok):
                    if res["files_s"] is None:
                        res["files_s"] = time.monotonic() - started
                    if res["healthz_s"] is not None:
                        return res
            time.sleep(0.1)
        return res

    def describe_file_token(self, tok, current):
        if tok is None:
            return "missing"
        if tok == current:
            return "current"
        return "an older token the sim " + ("still accepts" if self.profile_ok(tok) else "refuses")

    def stop(self, serve):
        """SIGTERM; seconds until exit, or None if it had to be killed after TERM_LIMIT_S."""
        t0 = time.monotonic()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=TERM_LIMIT_S)
            took = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
            took = None
        self.procs.forget(serve)
        return took, serve.returncode

    # ---- scenarios (run in a thread until `stop_evt` is set by the kill)

    def scenario_renewal(self, st, stop_evt):
        # the revoke happened before serve started; nothing to do while it runs
        pass

    def scenario_webhook(self, st, stop_evt):
        n = self.rng.randint(3, 8)
        st["deliveries"] = []
        for _ in range(n):
            if stop_evt.is_set():
                return
            status, _, body = request("POST", f"{self.sim}/sim/tokens",
                                   body={"ucc": self.creds["ucc"], "kind": "daily"})
            if status != 200:
                st["deliveries"].append(f"sim /sim/tokens {status}")
                return
            token = json.loads(body)["access_token"]
            claims = jwt_claims(token)
            payload = {
                "client_id": self.creds["client_id"],
                "user_id": self.creds["ucc"],
                "access_token": token,
                "token_type": "Bearer",
                "expires_at": str(int(claims["exp"]) * 1000),
                "issued_at": str(int(claims["iat"]) * 1000),
                "message_type": "access_token",
            }
            outcome = None
            while not stop_evt.is_set():
                try:
                    status, _, _ = request("POST", f"{self.daemon}/webhooks/upstox/token",
                                        body=payload, timeout=10)
                    outcome = status
                    break
                except OSError as e:  # not listening yet, or killed mid-request
                    outcome = type(getattr(e, "reason", e)).__name__
                    time.sleep(0.02)
            st["deliveries"].append(outcome)
            stop_evt.wait(self.rng.uniform(0, 0.25))

    def scenario_oauth(self, st, stop_evt):
        st["oauth"] = []
        for _ in range(self.rng.randint(1, 3)):
            if stop_evt.is_set():
                return
            st["oauth"].append(self.oauth_flow(stop_evt))

    def oauth_flow(self, stop_evt):
        r = self.upkeep("login")
        links = [w for w in r.stdout.split() if w.startswith("http")]
        if r.returncode != 0 or not links:
            return f"login-exit-{r.returncode}"
        browser = opener(CookieJar())
        status, hdrs, _ = request("GET", links[0], op=browser)
        if status != 302:
            return f"dialog-{status}"
        login_url = urllib.parse.urljoin(links[0], hdrs["Location"])
        status, _, page = request("GET", login_url, op=browser)
        m = re.search(r'name="request_id" value="([^"]*)"', page.decode("utf-8", "replace"))
        if status != 200 or not m:
            return f"login-page-{status}"
        status, _, clock = request("GET", f"{self.sim}/sim/clock")
        now_s = json.loads(clock)["epoch_ms"] / 1000 if status == 200 else time.time()
        form = {"request_id": html.unescape(m.group(1)), "mobile": self.creds["mobile"],
                "totp": totp_code(self.creds["totp_secret"], now_s), "pin": self.creds["pin"]}
        status, hdrs, _ = request("POST", urllib.parse.urljoin(login_url, "/sim/login"),
                               form=form, op=browser)
        if status != 302:
            return f"login-submit-{status}"
        callback = hdrs["Location"]
        while not stop_evt.is_set():
            try:
                status, _, _ = request("GET", callback, op=browser, timeout=10)
                return f"callback-{status}"
            except OSError:  # not listening yet, or killed mid-request
                time.sleep(0.02)
        return "callback-not-reached"

    # ---- one round

    def round(self, i):
        scen = self.rng.choice(SCENARIOS)
        # half the kills come early (0-0.3 s: startup, renewal, first writes), the rest
        # anywhere in 0-KILL_MAX_S
        delay = self.rng.uniform(0, 0.3) if self.rng.random() < 0.5 else self.rng.uniform(0, KILL_MAX_S)
        st = {"round": i, "scenario": scen, "kill_after_s": round(delay, 3), "problems": []}

        if scen == "renewal":
            tok = self.stored_token()
            if tok:
                status, _, body = request("POST", f"{self.sim}/sim/tokens/revoke",
                                       body={"access_token": tok})
                st["revoked"] = status == 200 and json.loads(body).get("revoked") is True
            else:
                st["revoked"] = False

        stop_evt = threading.Event()
        serve = self.start_serve(f"r{i:03d}-{scen}-killed")
        t0 = time.monotonic()
        worker = threading.Thread(target=self.run_scenario, args=(scen, st, stop_evt), daemon=True)
        worker.start()
        time.sleep(max(0.0, delay - (time.monotonic() - t0)))
        exited_early = serve.poll()
        serve.kill()
        serve.wait()
        self.procs.forget(serve)
        stop_evt.set()
        worker.join(timeout=30)
        if exited_early is not None:
            st["problems"].append(f"serve exited by itself ({exited_early}) before the kill; "
                                  f"see {serve.log_path}")
        killed_log = open(serve.log_path, errors="replace").read()
        st["renewed_before_kill"] = killed_log.count("new token is current")

        # temp files a crash left (the next start removes them)
        left = temp_files(self.write_dirs)
        st["temp_after_crash"] = [os.path.basename(p) for p in left]

        # database integrity
        out = integrity(self.db, os.path.join(self.work, "integrity"), self.sqlite3_cli)
        st["integrity"] = out
        if out != "ok":
            st["problems"].append(f"integrity_check: {out[:300]}")

        # restart, no kill
        serve = self.start_serve(f"r{i:03d}-{scen}-restart")
        t1 = time.monotonic()
        w = self.wait_working(serve, t1)
        st["working_s"] = w["working_s"] and round(w["working_s"], 3)
        st["files_s"] = w["files_s"] and round(w["files_s"], 3)
        st["healthz_s"] = w["healthz_s"] and round(w["healthz_s"], 3)
        if w["serve_died"]:
            st["problems"].append(f"restarted serve exited ({serve.returncode}); see {serve.log_path}")
        elif w["working_s"] is None:
            st["problems"].append(f"no working token within {TOKEN_WAIT_S:.0f} s")
        elif w["files_s"] is None:
            js, env = self.sink_tokens()
            st["stale_files"] = {"json_file": self.describe_file_token(js, w["token"]),
                                 "env_file": self.describe_file_token(env, w["token"])}
            st["problems"].append(
                f"token files do not hold the current token {FILES_GRACE_S:.0f} s after it "
                f"worked: json_file {st['stale_files']['json_file']}, "
                f"env_file {st['stale_files']['env_file']}")
        if not w["serve_died"] and w["healthz_s"] is None:
            st["problems"].append("/healthz never answered after the restart")
        # leftovers must be gone once the daemon is up (rescan to skip a write in flight)
        still = set(temp_files(self.write_dirs))
        if still:
            time.sleep(1.0)
            still &= set(temp_files(self.write_dirs))
        if still:
            st["problems"].append("temp files left after restart: " +
                                  ", ".join(sorted(os.path.basename(p) for p in still)))
        restart_log_text = open(serve.log_path, errors="replace").read()
        st["renewed_on_restart"] = restart_log_text.count("new token is current")

        took, code = self.stop(serve)
        st["sigterm_s"] = took and round(took, 3)
        st["sigterm_exit"] = code
        if took is None:
            st["problems"].append(f"serve did not exit within {TERM_LIMIT_S:.0f} s of SIGTERM")
        elif code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited {code}"
            st["problems"].append(f"serve {how} after SIGTERM (no graceful exit); "
                                  f"see {serve.log_path}")
        return st

    def run_scenario(self, scen, st, stop_evt):
        try:
            getattr(self, f"scenario_{scen}")(st, stop_evt)
        except Exception as e:  # a bench bug must not hang the round
            st.setdefault("scenario_errors", []).append(repr(e))

    # ---- the whole run

    def run(self):
        os.makedirs(os.path.dirname(self.json_sink), mode=0o700, exist_ok=True)
        self.start_sim()
        self.write_config()

        # baseline: first start logs in with TOTP and creates the store, key and files
        serve = self.start_serve("r000-baseline")
        t0 = time.monotonic()
        w = self.wait_working(serve, t0)
        took, code = self.stop(serve)
        if w["files_s"] is None or took is None:
            raise SystemExit(f"baseline serve gave no working token (or did not stop); "
                             f"see {serve.log_path}")
        log(f"baseline working token after {w['working_s']:.2f} s, SIGTERM exit {took:.2f} s")
        log(f"work     {self.work}")
        log(f"rounds   {self.args.rounds} (seed {self.args.seed})")

        results_path = os.path.join(self.work, "rounds.jsonl")
        with open(results_path, "w") as results:
            for i in range(1, self.args.rounds + 1):
                st = self.round(i)
                self.rounds.append(st)
                results.write(json.dumps(st) + "\n")
                results.flush()
                extra = ""
                if st["scenario"] == "webhook":
                    extra = f" deliveries={st.get('deliveries')}"
                elif st["scenario"] == "oauth":
                    extra = f" oauth={st.get('oauth')}"
                elif st["scenario"] == "renewal":
                    extra = f" revoked={st.get('revoked')}"
                log(f"[{i:3d}] {st['scenario']:<7} kill@{st['kill_after_s']:.3f}s "
                    f"renewed_before_kill={st['renewed_before_kill']} "
                    f"temp={len(st['temp_after_crash'])} integrity={st['integrity'][:20]} "
                    f"working={fmt(st['working_s'])}s files={fmt(st['files_s'])}s renewed_on_restart={st['renewed_on_restart']} "
                    f"term={fmt(st['sigterm_s'])}s{extra}"
                    + ("" if not st["problems"] else "  PROBLEM: " + "; ".join(st["problems"])))
                if st.get("scenario_errors"):
                    log(f"      bench error in scenario: {st['scenario_errors']}")

        final = integrity(self.db, os.path.join(self.work, "integrity"), self.sqlite3_cli)
        return self.summary(final, results_path)

    def summary(self, final_integrity, results_path):
        R = self.rounds
        per = {s: sum(1 for r in R if r["scenario"] == s) for s in SCENARIOS}
        integ = [r for r in R if r["integrity"] != "ok"]
        no_token = [r for r in R if r["working_s"] is None]
        stale_files = [r for r in R if r["working_s"] is not None and r["files_s"] is None]
        working = [r["working_s"] for r in R if r["working_s"] is not None]
        files = [r["files_s"] for r in R if r["files_s"] is not None]
        renewed = [r["working_s"] for r in R if r["renewed_on_restart"] and r["working_s"] is not None]
        temp_rounds = [r for r in R if r["temp_after_crash"]]
        temp_total = sum(len(r["temp_after_crash"]) for r in R)
        temp_left = [r for r in R if any(p.startswith("temp files left") for p in r["problems"])]
        terms = [r["sigterm_s"] for r in R if r["sigterm_s"] is not None]
        term_fail = [r for r in R if r["sigterm_s"] is None]
        term_unclean = [r for r in R if r["sigterm_s"] is not None and r["sigterm_exit"] != 0]
        mid_renewal = [r for r in R if r["scenario"] == "renewal" and r["renewed_before_kill"] == 0]

        bad_lines = []
        for name in sorted(os.listdir(self.logs)):
            if not name.endswith(".stderr") or name == "sim.stderr":
                continue
            with open(os.path.join(self.logs, name), errors="replace") as f:
                for line in f:
                    if ERROR_RE.search(line):
                        bad_lines.append(f"{name}: {line.rstrip()}")
        panics = [ln for ln in bad_lines if "panicked" in ln]

        log("")
        log("==== crash-loop summary ====")
        log(f"rounds                       {len(R)}  (" +
            ", ".join(f"{s} {per[s]}" for s in SCENARIOS) + ")")
        log(f"renewal killed early         {len(mid_renewal)} of {per['renewal']} renewal rounds were killed "
            "before 'new token is current' was logged")
        deliveries = [d for r in R for d in r.get("deliveries", [])]
        flows = [f for r in R for f in r.get("oauth", [])]
        log(f"webhook deliveries           {len(deliveries)} posted, "
            f"{sum(1 for d in deliveries if d == 200)} answered 200 before the kill")
        log(f"oauth flows                  {len(flows)} started, "
            f"{sum(1 for f in flows if f == 'callback-200')} callbacks answered 200 before the kill")
        log(f"integrity failures           {len(integ)}" +
            ("" if not integ else "  rounds " + ", ".join(str(r["round"]) for r in integ)))
        log(f"final integrity_check        {final_integrity}")
        log(f"no working token in {TOKEN_WAIT_S:.0f} s     {len(no_token)}" +
            ("" if not no_token else "  rounds " + ", ".join(str(r["round"]) for r in no_token)))
        log(f"token files not current      {len(stale_files)} rounds ({FILES_GRACE_S:.0f} s after a working token)")
        for r in stale_files:
            sf = r.get("stale_files", {})
            log(f"  round {r['round']} ({r['scenario']}, kill@{r['kill_after_s']:.3f}s, temp after crash: "
                f"{', '.join(r['temp_after_crash']) or 'none'}): json_file {sf.get('json_file')}, "
                f"env_file {sf.get('env_file')}")
        log(f"working token after restart  max {fmt(max(working) if working else None)} s, "
            f"median {fmt(statistics.median(working) if working else None)} s, "
            f"p90 {fmt(pct(working, 0.9))} s")
        log(f"  of which renewed at start  {len(renewed)} rounds: max {fmt(max(renewed) if renewed else None)} s, "
            f"median {fmt(statistics.median(renewed) if renewed else None)} s")
        log(f"token files current after    max {fmt(max(files) if files else None)} s, "
            f"median {fmt(statistics.median(files) if files else None)} s")
        log(f"temp files after crashes     {temp_total} files in {len(temp_rounds)} of {len(R)} crashes" +
            ("" if not temp_rounds else "  (" + "; ".join(
                f"r{r['round']}: {', '.join(r['temp_after_crash'])}" for r in temp_rounds[:10]) + ")"))
        log(f"temp files left after start  {len(temp_left)} rounds")
        log(f"SIGTERM exit                 max {fmt(max(terms) if terms else None)} s, "
            f"median {fmt(statistics.median(terms) if terms else None)} s, "
            f"over {TERM_LIMIT_S:.0f} s: {len(term_fail)}, exit status not 0: {len(term_unclean)}")
        log(f"stderr ERROR/panicked lines  {len(bad_lines)} (panics: {len(panics)})")
        for ln in bad_lines[:40]:
            log(f"  {ln}")
        if len(bad_lines) > 40:
            log(f"  ... {len(bad_lines) - 40} more")
        problems = [(r["round"], p) for r in R for p in r["problems"]]
        if problems:
            log(f"problems                     {len(problems)}")
            for rnd, p in problems[:40]:
                log(f"  round {rnd}: {p}")
        log(f"per-round records            {results_path}")
        log(f"logs                         {self.logs}")
        failed = bool(problems or panics or bad_lines or final_integrity != "ok")
        log("RESULT                       " + ("FAIL" if failed else "PASS"))
        return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--bin", required=True, help="upkeep binary (copied into --work)")
    ap.add_argument("--work", required=True, help="empty scratch folder (kept: logs, records)")
    ap.add_argument("--seed", type=int, default=None,
                    help="random seed (default: time-based; printed so a run can be repeated)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int(time.time())
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    os.makedirs(args.work, mode=0o700, exist_ok=True)
    os.chmod(args.work, 0o700)
    binary = os.path.join(os.path.abspath(args.work), "upkeep")
    shutil.copy2(args.bin, binary)  # a rebuild during the run cannot swap it
    args.bin = binary

    bench = Bench(args)

    def on_signal(signum, _frame):
        bench.procs.kill_all()
        sys.exit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        rc = bench.run()
    finally:
        bench.procs.kill_all()
        try:
            os.remove(binary)  # the copy is 60+ MB for a debug build; logs stay
        except OSError:
            pass
    sys.exit(rc)


if __name__ == "__main__":
    main()

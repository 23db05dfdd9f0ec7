#!/usr/bin/env python3
"""Measurements for bench/slow-clients.sh (Python 3 standard library only).

Subcommands (each prints its figures as single lines on stdout, progress on stderr):

  wait     --port P                     wait until GET /healthz answers
  stall    --port P [--n 1000] [--probes 20] [--pid PID] [--log FILE] [--label L]
           open N connections that each send a partial request and stall, time PROBES
           GET /healthz on fresh connections, then time until the daemon closed them all
  sigterm  --port P --pid PID [--n 50] [--log FILE]
           open N stalled connections, SIGTERM the daemon, time until it has exited
  flood    --port P [--secs 5] [--tail 65] [--threads 32] [--log FILE] [--pid PID]
           POST forged notifier payloads for SECS seconds; requests/s, status mix, and
           the daemon's stderr growth over SECS + TAIL seconds
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import resource
import select
import signal
import socket
import statistics
import sys
import threading
import time

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def note(msg):
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        note(f"RLIMIT_NOFILE of this script raised {soft} -> {new}")
        if new < need:
            note(f"hard limit {hard} is below the {need} descriptors wanted")


def fmt_s(secs):
    return f"{secs * 1000:.1f} ms" if secs < 1 else f"{secs:.2f} s"


def daemon_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def log_size(path):
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def log_since(path, offset):
    if not path:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


ANSI = re.compile(r"\x1b\[[0-9;]*m")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\S+\s+")
FIELD = re.compile(r"\s(\w+=|\()")


def log_kinds(data):
    """'N x LEVEL message' per distinct message (fields and timestamps stripped)."""
    kinds = {}
    for line in ANSI.sub("", data.decode("utf-8", "replace")).splitlines():
        line = TS.sub("", line)
        m = FIELD.search(line)
        msg = (line[:m.start()] if m else line).strip()
        msg = re.sub(r"\d+", "N", msg)[:90]
        kinds[msg] = kinds.get(msg, 0) + 1
    return "; ".join(f"{n}x '{k}'" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def show_log(data, limit=12, prefix="     | "):
    lines = data.decode("utf-8", "replace").splitlines()
    for line in lines[:limit]:
        print(prefix + (line if len(line) <= 300 else line[:300] + "..."), flush=True)
    if len(lines) > limit:
        print(f"{prefix}... ({len(lines) - limit} more lines)", flush=True)


# ---------------------------------------------------------------------------- wait


def healthz_once(port, timeout=10.0):
    """One GET /healthz on a fresh connection: (status or None, seconds, error)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(max(0.01, timeout - (time.monotonic() - t0)))
            s.sendall(HEALTHZ)
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                head, sep, body = buf.partition(b"\r\n\r\n")
                if sep:
                    # Stop as soon as the whole body is in (do not rely on the close).
                    length = None
                    for h in head.split(b"\r\n")[1:]:
                        k, _, v = h.partition(b":")
                        if k.strip().lower() == b"content-length":
                            length = int(v.strip())
                    if length is not None and len(body) >= length:
                        break
        dt = time.monotonic() - t0
        status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else None
        return status, dt, None if status else f"no HTTP answer ({len(buf)} bytes)"
    except (OSError, ValueError, IndexError) as e:
        return None, time.monotonic() - t0, type(e).__name__ + (f": {e}" if str(e) else "")


def cmd_wait(a):
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        status, _, _ = healthz_once(a.port, timeout=1.0)
        if status == 200:
            return 0
        time.sleep(0.1)
    print(f"no 200 from http://127.0.0.1:{a.port}/healthz within {a.timeout:.0f} s", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------- stalled clients


class Stalled:
    """N connections holding a partial request; a thread notes when each is closed
    (watching from the first connection on, so evictions while opening are timed too)."""

    def __init__(self, port, n):
        raise_nofile(n + 256)
        self.conns = []  # (socket, sent_at)
        self.connect_secs = []
        self.failed = {}
        self.closed = {}  # fileno -> (time, how)
        self.answers = {}  # first line the daemon sent before closing -> count
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ep = select.epoll()
        self.by_fd = {}
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        for _ in range(n):
            try:
                t0 = time.monotonic()
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                self.connect_secs.append(time.monotonic() - t0)
                s.sendall(PARTIAL)
                s.setblocking(False)
                sent = time.monotonic()
            except OSError as e:
                k = type(e).__name__
                self.failed[k] = self.failed.get(k, 0) + 1
                continue
            with self.lock:
                self.by_fd[s.fileno()] = s
            self.conns.append((s, sent))
            self.ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP)
        self.opened_at = time.monotonic()

    def _watch(self):
        got = {}
        while not self.stop.is_set():
            for fd, _ev in self.ep.poll(0.05):
                with self.lock:
                    s = self.by_fd.get(fd)
                if s is None:
                    continue
                how = None
                try:
                    data = s.recv(65536)
                    if data:
                        got.setdefault(fd, data[:40])
                        continue
                    how = "EOF"
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    how = "reset"
                except OSError as e:
                    how = type(e).__name__
                now = time.monotonic()
                self.ep.unregister(fd)
                with self.lock:
                    del self.by_fd[fd]
                    self.closed[fd] = (now, how)
                    if fd in got:
                        first = got[fd].split(b"\r\n", 1)[0].decode("latin-1")
                        self.answers[first] = self.answers.get(first, 0) + 1

    def n_open(self):
        return len(self.conns)

    def n_closed(self):
        with self.lock:
            return len(self.closed)

    def slow_connects(self, over=0.5):
        return sum(1 for t in self.connect_secs if t > over)

    def wait_all_closed(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.n_closed() < len(self.conns):
            time.sleep(0.05)
        return self.n_closed() == len(self.conns)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=2)
        for s, _ in self.conns:
            try:
                s.close()
            except OSError:
                pass
        self.ep.close()

    def summary(self):
        """(sorted close times, how each closed, per-connection lifetimes, answers)."""
        with self.lock:
            closed = dict(self.closed)
            answers = dict(self.answers)
        sent = {s.fileno(): t for s, t in self.conns}
        times = sorted(t for t, _ in closed.values())
        hows = {}
        for _, how in closed.values():
            hows[how] = hows.get(how, 0) + 1
        per_conn = [closed[fd][0] - sent[fd] for fd in closed if fd in sent]
        return times, hows, per_conn, answers


def fmt_hows(hows, answers):
    parts = [f"{n} {h}" for h, n in sorted(hows.items())]
    if answers:
        parts.append("answered first: " + ", ".join(f"{n}x '{a}'" for a, n in answers.items()))
    else:
        parts.append("no bytes sent before closing")
    return ", ".join(parts)


def cmd_stall(a):
    label = a.label
    log0 = log_size(a.log)
    note(f"[{label}] opening {a.n} stalled connections")
    st = Stalled(a.port, a.n)
    open_secs = st.opened_at - st.conns[0][1] if st.conns else 0.0
    fds = daemon_fds(a.pid) if a.pid else None
    failed = "".join(f", {n} failed ({k})" for k, n in st.failed.items())
    extra = f"; daemon holds {fds} fds" if fds is not None else ""
    slow = st.slow_connects()
    note(f"[{label}] {st.n_open()} open in {open_secs:.2f} s{failed}; "
         f"{st.n_closed()} already closed by the daemon{extra}")
    opening = (f"opening them took {open_secs:.2f} s, {slow} connect(s) took > 0.5 s "
               f"(SYN retransmitted: listen queue full), {st.n_closed()} closed by the daemon meanwhile")

    lat, statuses = [], {}
    for _ in range(a.probes):
        status, dt, err = healthz_once(a.port, timeout=a.probe_timeout)
        key = str(status) if status else (err or "error")
        statuses[key] = statuses.get(key, 0) + 1
        lat.append(dt)
    ok = statuses.get("200", 0)
    mx, med = max(lat), statistics.median(lat)
    verdict = "OK" if ok == a.probes and mx < a.probe_goal else "MISSED"
    mix = ", ".join(f"{k} x{n}" for k, n in sorted(statuses.items()))
    print(f"[{label}] /healthz with {st.n_open()} stalled clients open{failed}: "
          f"{ok}/{a.probes} answered 200 ({mix}); latency median {fmt_s(med)}, max {fmt_s(mx)} "
          f"(goal: all answered, max < {a.probe_goal:.0f} s) -> {verdict}; {opening}", flush=True)

    note(f"[{label}] waiting up to {a.close_timeout:.0f} s for the daemon to close the stalled connections")
    all_closed = st.wait_all_closed(a.close_timeout - (time.monotonic() - st.opened_at))
    times, hows, per_conn, answers = st.summary()
    n = st.n_open()
    if all_closed and n:
        last = times[-1] - st.opened_at
        verdict = "OK" if last <= a.close_goal else "MISSED"
        early = sum(1 for t in times if t <= st.opened_at)
        first_sent = st.conns[0][1]
        print(f"[{label}] all {n} stalled connections closed by the daemon {last:.2f} s after the "
              f"last was opened (first closed {times[0] - first_sent:.2f} s after the first was opened; "
              f"{early} closed while still opening the rest; per connection "
              f"{min(per_conn):.2f}-{max(per_conn):.2f} s after its partial request; "
              f"{fmt_hows(hows, answers)}) (goal <= {a.close_goal:.0f} s) -> {verdict}", flush=True)
    else:
        print(f"[{label}] only {len(times)}/{n} stalled connections closed by the daemon within "
              f"{a.close_timeout:.0f} s of the last being opened"
              + (f" (first at {times[0] - st.opened_at:+.2f} s, last at {times[-1] - st.opened_at:+.2f} s; "
                 f"{fmt_hows(hows, answers)})" if times else "")
              + f" (goal: all within {a.close_goal:.0f} s) -> MISSED", flush=True)
    st.close()

    if a.log:
        data = log_since(a.log, log0)
        emfile = data.count(b"Too many open files")
        lines = data.count(b"\n")
        print(f"[{label}] daemon stderr during the run: {lines} lines, {len(data)} bytes; "
              f"'Too many open files': {'yes, ' + str(emfile) + ' lines' if emfile else 'no'}",
              flush=True)
        show_log(data)
    return 0


# ---------------------------------------------------------------------------- SIGTERM


def proc_state(pid):
    """'Z' (exited, not yet reaped), another state letter, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def proc_cpu(pid):
    """User + system CPU seconds of a process (and its reaped children) so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cmd_sigterm(a):
    log0 = log_size(a.log)
    note(f"opening {a.n} stalled connections, then SIGTERM to pid {a.pid}")
    st = Stalled(a.port, a.n)
    time.sleep(0.5)  # let the daemon accept them all
    fds = daemon_fds(a.pid)
    note(f"{st.n_open()} open, {st.n_closed()} closed; daemon holds {fds} fds")
    t0 = time.monotonic()
    os.kill(a.pid, signal.SIGTERM)
    exited = None
    while time.monotonic() - t0 < a.timeout:
        if proc_state(a.pid) in (None, "Z"):
            exited = time.monotonic() - t0
            break
        time.sleep(0.005)
    times, hows, _, answers = st.summary()
    closed = [t - t0 for t in times]
    conns = (f"stalled connections closed: {len(closed)}/{st.n_open()}"
             + (f" ({min(closed):+.2f} .. {max(closed):+.2f} s after SIGTERM; {fmt_hows(hows, answers)})"
                if closed else ""))
    if exited is None:
        print(f"SIGTERM with {st.n_open()} stalled clients: still running {a.timeout:.0f} s after SIGTERM "
              f"(goal: exit within {a.goal:.0f} s) -> MISSED; {conns}", flush=True)
    else:
        verdict = "OK" if exited <= a.goal else "MISSED"
        print(f"SIGTERM with {st.n_open()} stalled clients: process exited {exited:.2f} s after SIGTERM "
              f"(goal <= {a.goal:.0f} s) -> {verdict}; {conns}", flush=True)
    st.close()
    if a.log:
        data = log_since(a.log, log0)
        nlines = data.count(b"\n")
        print(f"SIGTERM: daemon stderr from just before SIGTERM to exit: {nlines} lines", flush=True)
        show_log(data)
    return 0


# ---------------------------------------------------------------------------- webhook flood


def b64url(obj):
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged_jwt(sub):
    now = int(time.time())
    claims = {
        "sub": sub,
        "jti": "%024x" % random.getrandbits(96),  # every forgery distinct
        "iat": now,
        "exp": now + 3600,
        "isMultiClient": False,
        "isPlusPlan": True,
        "iss": "udapi-gateway-service",
    }
    return b64url({"alg": "HS256", "typ": "JWT"}) + "." + b64url(claims) + ".sig"


def notifier(client_id, user_id, token):
    now = int(time.time())
    return json.dumps({
        "client_id": client_id,
        "user_id": user_id,
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": str((now + 3600) * 1000),
        "issued_at": str(now * 1000),
        "message_type": "access_token",
    }).encode()


KINDS = ("garbage", "other-app", "bench-app")


def body_for(kind):
    if kind == "garbage":
        junk = "%x" % random.getrandbits(64)
        return random.choice([
            b'{"client_id": "bench-app", "user_id": ' + junk.encode(),
            b"not json at all " + junk.encode(),
            b'{"hello": "' + junk.encode() + b'"}',
            b"[1, 2, 3]",
        ])
    if kind == "other-app":
        return notifier("other-app", "AB1234", forged_jwt("AB1234"))
    return notifier("bench-app", "AB1234", forged_jwt("AB1234"))


def cmd_flood(a):
    raise_nofile(a.threads * 4 + 256)
    log0 = log_size(a.log)
    cpu0 = proc_cpu(a.pid) if a.pid else None
    me0 = os.times()
    results = []  # (kind, status, finished_at, latency)
    lock = threading.Lock()
    start = time.monotonic()
    end = start + a.secs

    def worker(idx):
        conn = None
        i = idx
        mine = []
        while time.monotonic() < end:
            kind = KINDS[i % len(KINDS)]
            i += 1
            body = body_for(kind)
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=a.req_timeout)
                conn.request("POST", "/webhooks/upstox/token", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status = str(resp.status)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            t1 = time.monotonic()
            mine.append((kind, status, t1, t1 - t0))
        if conn is not None:
            conn.close()
        with lock:
            results.extend(mine)

    note(f"flooding POST /webhooks/upstox/token for {a.secs:.0f} s with {a.threads} threads")
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished = time.monotonic()
    cpu1 = proc_cpu(a.pid) if a.pid else None
    me1 = os.times()
    in_window = [r for r in results if r[2] <= end]
    late = len(results) - len(in_window)
    rate = len(in_window) / a.secs
    mix = {}
    for kind, status, _, _ in results:
        mix.setdefault(kind, {}).setdefault(status, 0)
        mix[kind][status] += 1
    overall = {}
    for _, status, _, _ in results:
        overall[status] = overall.get(status, 0) + 1
    slowest = {}
    for kind, _, _, lat in results:
        slowest[kind] = max(slowest.get(kind, 0.0), lat)
    print(f"webhook flood: {len(in_window)} requests answered in {a.secs:.0f} s with {a.threads} threads = "
          f"{rate:.0f} requests/s (plus {late} answered after the window, the last "
          f"{finished - end:.1f} s after it)"
          + (f"; CPU used meanwhile: daemon {cpu1 - cpu0:.1f} s, this client "
             f"{(me1.user + me1.system) - (me0.user + me0.system):.1f} s over {finished - start:.1f} s"
             if cpu0 is not None and cpu1 is not None else ""), flush=True)
    print("webhook flood: status mix: "
          + ", ".join(f"{s} x{n}" for s, n in sorted(overall.items())) + "; by payload: "
          + "; ".join(f"{k}: " + ", ".join(f"{s} x{n}" for s, n in sorted(mix.get(k, {}).items()))
                      + f" (slowest {fmt_s(slowest.get(k, 0.0))})" for k in KINDS), flush=True)

    until = start + a.secs + a.tail
    note(f"watching the daemon's stderr until {a.secs + a.tail:.0f} s after the flood began")
    while time.monotonic() < until:
        time.sleep(min(1.0, until - time.monotonic()) if until > time.monotonic() else 0)
    data = log_since(a.log, log0)
    lines = data.count(b"\n")
    verdict = "OK" if lines <= a.lines_goal else "MISSED"
    print(f"webhook flood: daemon stderr over the {a.secs:.0f} s flood + {a.tail:.0f} s after: "
          f"{len(data)} bytes, {lines} lines for {len(results)} requests "
          f"(goal: a few lines, <= {a.lines_goal}, not one per request) -> {verdict}", flush=True)
    print(f"webhook flood: those log lines by message: {log_kinds(data)}", flush=True)
    show_log(data, limit=a.show_lines)
    return 0


# ---------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    w = sub.add_parser("wait")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--timeout", type=float, default=60)

    s = sub.add_parser("stall")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--probes", type=int, default=20)
    s.add_argument("--probe-timeout", type=float, default=10)
    s.add_argument("--probe-goal", type=float, default=2)
    s.add_argument("--close-goal", type=float, default=60)
    s.add_argument("--close-timeout", type=float, default=90)
    s.add_argument("--pid", type=int)
    s.add_argument("--log")
    s.add_argument("--label", default="stalled clients")

    t = sub.add_parser("sigterm")
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--pid", type=int, required=True)
    t.add_argument("--n", type=int, default=50)
    t.add_argument("--goal", type=float, default=15)
    t.add_argument("--timeout", type=float, default=40)
    t.add_argument("--log")

    f = sub.add_parser("flood")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--secs", type=float, default=5)
    f.add_argument("--tail", type=float, default=65)
    f.add_argument("--threads", type=int, default=32)
    f.add_argument("--req-timeout", type=float, default=20)
    f.add_argument("--lines-goal", type=int, default=10)
    f.add_argument("--log")
    f.add_argument("--pid", type=int)
    f.add_argument("--show-lines", type=int, default=6)

    a = p.parse_args()
    return {"wait": cmd_wait, "stall": cmd_stall, "sigterm": cmd_sigterm, "flood": cmd_flood}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

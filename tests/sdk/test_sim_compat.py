"""The official Upstox Python SDK (upstox-python-sdk==2.30.0) against `upkeep sim`.

Run by scripts/test with the venv from scripts/sdk-venv.sh:

    UPKEEP_BIN=target/debug/upkeep .venv-sdk/bin/python tests/sdk/test_sim_compat.py

(`python -m unittest discover -s tests/sdk -v` works too, without the closing count line.)

Every test class starts its own simulator on a free loopback port, so the classes do not
depend on each other's clock moves. The SDK's own parsers must accept every response, and
each raw JSON body is also checked against the SDK model's declared types, because the SDK
parses leniently (a missing key becomes None, the string "false" becomes True).
See README.md beside this file for the SDK quirks and what this test does about each.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html.parser
import http.cookiejar
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import upstox_client
import upstox_client.feeder.market_data_feeder_v3 as sdk_feeder_module
from upstox_client.feeder.market_data_feeder_v3 import MarketDataFeederV3
from upstox_client.feeder.market_data_streamer_v3 import MarketDataStreamerV3
from upstox_client.rest import ApiException

# ---------------------------------------------------------------------------------------------
# settings

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UPKEEP_BIN = os.environ.get("UPKEEP_BIN") or os.path.join(REPO, "target", "debug", "upkeep")

SDK_VERSION = "2.30.0"
SDK_FEED_URL = "wss://api.upstox.com/v3/feed/market-data-feed"  # hard-coded in the SDK

STARTUP_TIMEOUT = 30.0  # seconds for `upkeep sim` to listen and write its credentials
HTTP_TIMEOUT = 10  # SDK `_request_timeout`: must be an int (a float is silently ignored)
FEED_TIMEOUT = 20.0  # seconds to wait for the expected feed messages

LTPC_KEY = "NSE_EQ|INE848E01016"  # NHPC
FULL_EQ_KEY = "NSE_EQ|INE669E01016"  # IDEA
FULL_INDEX_KEY = "NSE_INDEX|Nifty 50"
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

# A Monday 10:00 IST: market open, outside the 00:00-05:30 funds window.
MARKET_HOURS_IST = "2026-11-23T10:00:00"
# 03:31 IST the next morning: the token issued at MARKET_HOURS_IST expired at 03:30.
AFTER_EXPIRY_IST = "2026-11-24T03:31:00"


# ---------------------------------------------------------------------------------------------
# the simulator process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Makes urllib hand 3xx responses back instead of following them."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


class SimError(AssertionError):
    pass


class Sim:
    """`upkeep sim` as a subprocess, with its control API and OAuth login page."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="upkeep-sdk-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.creds_path = os.path.join(self.tmp.name, "creds.json")
        self.log_path = os.path.join(self.tmp.name, "sim.log")
        self.creds: dict = {}
        self.proc: subprocess.Popen | None = None
        self.cookies = http.cookiejar.CookieJar()
        self.http = urllib.request.build_opener(
            NoRedirect(), urllib.request.HTTPCookieProcessor(self.cookies)
        )

    # -- lifecycle --

    def start(self) -> "Sim":
        if not os.access(UPKEEP_BIN, os.X_OK):
            raise SimError(f"{UPKEEP_BIN} is missing; build it with `cargo build -p upkeep`")
        cmd = [
            UPKEEP_BIN,
            "sim",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--credentials-out",
            self.creds_path,
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise SimError(
                    f"`{' '.join(cmd)}` exited with {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            if self._listening() and self._load_creds():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise SimError(
                    f"`upkeep sim` did not listen on {self.port} and write {self.creds_path} "
                    f"within {STARTUP_TIMEOUT:.0f}s:\n" + self.log_tail()
                )
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _load_creds(self) -> bool:
        try:
            with open(self.creds_path, encoding="utf-8") as f:
                creds = json.load(f)
        except (OSError, ValueError):
            return False  # not there yet, or still being written
        if isinstance(creds, list):  # one entry per simulated user: the first is the demo user
            if not creds:
                raise SimError(f"{self.creds_path} holds an empty list")
            creds = creds[0]
        if not isinstance(creds, dict):
            raise SimError(f"{self.creds_path} holds neither an object nor a list of objects")
        missing = {
            "ucc",
            "mobile",
            "pin",
            "totp_secret",
            "client_id",
            "client_secret",
            "redirect_uri",
            "plan",
        } - set(creds)
        if missing:
            raise SimError(f"credentials file lacks {sorted(missing)}: keys are {sorted(creds)}")
        self.creds = creds
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()
        self.tmp.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no simulator log)"

    # -- plain HTTP --

    def request(self, method: str, path_or_url: str, *, data: dict | None = None,
                json_body: dict | None = None, headers: dict | None = None):
        """One request without following redirects. Returns (status, headers, body bytes)."""
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        body = None
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        elif data is not None:
            body = urllib.parse.urlencode(data).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
        try:
            with self.http.open(req, timeout=HTTP_TIMEOUT) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    # -- control API --

    def control(self, path: str, body: dict) -> dict:
        status, _, raw = self.request("POST", path, json_body=body)
        if status // 100 != 2:
            raise SimError(f"POST {path} {body} answered {status}: {raw[:300]!r}")
        return json.loads(raw) if raw.strip() else {}

    def jump_to_ist(self, when: str) -> None:
        self.control("/sim/clock", {"jump_to_ist": when})

    # -- OAuth authorization-code flow through the HTML login page --

    def authorize(self, state: str = "sdk-compat") -> str:
        """Drives the dialog and login page like a browser user; returns the `code`."""
        c = self.creds
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": c["client_id"],
                "redirect_uri": c["redirect_uri"],
                "state": state,
            }
        )
        url = f"{self.base}/v2/login/authorization/dialog?{query}"
        method, data = "GET", None
        for _step in range(10):
            status, headers, body = self.request(method, url, data=data)
            if status in (301, 302, 303, 307, 308):
                location = urllib.parse.urljoin(url, headers.get("Location", ""))
                if location.startswith(c["redirect_uri"]):
                    params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
                    if params.get("state") != [state]:
                        raise SimError(f"redirect to {location} does not carry state={state}")
                    if not params.get("code"):
                        raise SimError(f"redirect to {location} carries no code")
                    return params["code"][0]
                url, method, data = location, "GET", None
                continue
            if status != 200:
                raise SimError(f"{method} {url} answered {status}: {body[:300]!r}")
            form = LoginForm.parse(body.decode("utf-8", errors="replace"))
            if form is None:
                raise SimError(f"{url} shows no login form: {body[:300]!r}")
            url = urllib.parse.urljoin(url, form.action or url)
            method = form.method
            data = form.fill(self)
        raise SimError("the login page did not redirect to redirect_uri within 10 steps")

    def sim_now(self) -> dt.datetime:
        status, _, raw = self.request("GET", "/sim/clock")
        if status != 200:
            raise SimError(f"GET /sim/clock answered {status}: {raw[:200]!r}")
        return parse_sim_time(json.loads(raw))


def parse_sim_time(obj: dict) -> dt.datetime:
    """`GET /sim/clock` answers `{now, now_ist, epoch_ms, speed, next_rollover}`."""
    ms = obj.get("epoch_ms")
    if not isinstance(ms, int):
        raise SimError(f"GET /sim/clock answer has no integer epoch_ms: {obj}")
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def totp_code(secret_b32: str, at: dt.datetime) -> str:
    """RFC 6238, SHA1, 6 digits, 30 s steps (what the simulator verifies)."""
    cleaned = secret_b32.replace(" ", "").replace("=", "").upper()
    key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    counter = int(at.timestamp()) // 30
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


class LoginForm(html.parser.HTMLParser):
    """The first <form> of a page: action, method and its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "GET"
        self.inputs: list[dict] = []
        self._in_form = False
        self._seen_form = False

    @classmethod
    def parse(cls, page: str) -> "LoginForm | None":
        p = cls()
        p.feed(page)
        return p if p._seen_form else None

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form" and not self._seen_form:
            self._in_form = self._seen_form = True
            self.action = a.get("action")
            self.method = (a.get("method") or "GET").upper()
        elif self._in_form and tag in ("input", "button") and a.get("name"):
            self.inputs.append(a)

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False

    def fill(self, sim: Sim) -> dict:
        c = sim.creds
        out: dict[str, str] = {}
        for a in self.inputs:
            name, value = a["name"], a.get("value", "")
            low = name.lower()
            if "mobile" in low or low in ("username", "login"):
                value = c["mobile"]
            elif "totp" in low or "otp" in low:
                value = totp_code(c["totp_secret"], sim.sim_now())
            elif "pin" in low or "password" in low:
                value = c["pin"]
            out[name] = value
        return out


# ---------------------------------------------------------------------------------------------
# the SDK side


class RecordingApiClient(upstox_client.ApiClient):
    """The SDK's ApiClient, keeping the raw JSON body of the last response it parsed."""

    last_raw: object = None

    def deserialize(self, response, response_type):
        self.last_raw = json.loads(response.data)
        return super().deserialize(response, response_type)


def sdk_client(sim: Sim, access_token: str = "") -> RecordingApiClient:
    # Configuration() returns a copy of the FIRST instance ever made (TypeWithDefault metaclass),
    # ignoring its arguments: set every attribute that matters explicitly, every time.
    conf = upstox_client.Configuration()
    conf.sandbox = False
    conf.host = sim.base
    conf.order_host = sim.base
    conf.access_token = access_token
    conf.verify_ssl = True
    conf.proxy = None
    client = RecordingApiClient(conf)
    _CLIENTS.append(client)
    return client


# Every ApiClient starts a ThreadPool in __init__ and closes it in __del__, which at interpreter
# exit prints "Error during ApiClient cleanup: ...". Close them while the interpreter is whole.
_CLIENTS: list = []


def close_clients() -> None:
    while _CLIENTS:
        client = _CLIENTS.pop()
        client.pool.close()
        client.pool.join()
        client.rest_client.pool_manager.clear()


def tearDownModule() -> None:  # noqa: N802 (unittest hook)
    close_clients()


PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    # The SDK parses these from strings (dateutil).
    "date": (str,),
    "datetime": (str,),
}


def assert_matches_model(tc: unittest.TestCase, raw, type_name: str, path: str = "$") -> None:
    """Checks raw JSON against the SDK's declared swagger types (which the SDK itself does not)."""
    if raw is None:
        return
    if type_name.startswith("list["):
        tc.assertIsInstance(raw, list, f"{path} should be a JSON array")
        for i, item in enumerate(raw):
            assert_matches_model(tc, item, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name.startswith("dict("):
        tc.assertIsInstance(raw, dict, f"{path} should be a JSON object")
        value_type = type_name[5:-1].split(",", 1)[1].strip()
        for k, v in raw.items():
            assert_matches_model(tc, v, value_type, f"{path}[{k!r}]")
        return
    if type_name in PRIMITIVES:
        ok = isinstance(raw, PRIMITIVES[type_name]) and (
            type_name == "bool" or not isinstance(raw, bool)
        )
        tc.assertTrue(ok, f"{path} should be a JSON {type_name}, got {raw!r}")
        return
    if type_name == "object":
        return
    klass = getattr(upstox_client.models, type_name)
    tc.assertIsInstance(raw, dict, f"{path} should be a JSON object ({type_name})")
    for attr, attr_type in klass.swagger_types.items():
        key = klass.attribute_map[attr]
        if key in raw:
            assert_matches_model(tc, raw[key], attr_type, f"{path}.{key}")


def assert_keys(tc: unittest.TestCase, raw: dict, keys, path: str) -> None:
    missing = [k for k in keys if k not in raw or raw[k] is None]
    tc.assertFalse(missing, f"{path} lacks {missing}; has {sorted(raw)}")


class SimCase(unittest.TestCase):
    """Starts a simulator, sets market hours and logs in through OAuth with the SDK."""

    sim: Sim
    token: upstox_client.TokenResponse
    token_raw: dict

    @classmethod
    def setUpClass(cls) -> None:
        cls.sim = Sim().start()
        try:
            cls.sim.jump_to_ist(MARKET_HOURS_IST)
            code = cls.sim.authorize()
            c = cls.sim.creds
            client = sdk_client(cls.sim)
            cls.token = upstox_client.LoginApi(client).token(
                api_version="2.0",
                code=code,
                client_id=c["client_id"],
                client_secret=c["client_secret"],
                redirect_uri=c["redirect_uri"],
                grant_type="authorization_code",
                _request_timeout=HTTP_TIMEOUT,
            )
            cls.token_raw = client.last_raw
            cls.token_code = code
        except BaseException:
            tail = cls.sim.log_tail()
            cls.sim.stop()
            sys.stderr.write("simulator log tail:\n" + tail)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.sim.stop()

    def client(self) -> RecordingApiClient:
        return sdk_client(self.sim, self.token.access_token)


# ---------------------------------------------------------------------------------------------
# The same bot through upkeep's gateway


def bot(client) -> dict:
    """What a bot does with the SDK. Nothing in it knows whether `client` talks to Upstox
    directly or through upkeep's gateway: only the configuration differs."""
    user = upstox_client.UserApi(client)
    profile = user.get_profile("2.0", _request_timeout=HTTP_TIMEOUT)
    funds = user.get_user_fund_margin("2.0", _request_timeout=HTTP_TIMEOUT)
    ltp = upstox_client.MarketQuoteV3Api(client).get_ltp(
        instrument_key=LTPC_KEY, _request_timeout=HTTP_TIMEOUT
    )
    orders = upstox_client.OrderApi(client)
    placed = orders.place_order(
        upstox_client.PlaceOrderRequest(
            quantity=1, product="D", validity="DAY", price=0.0, tag="sdk",
            instrument_token=LTPC_KEY, order_type="MARKET", transaction_type="BUY",
            disclosed_quantity=0, trigger_price=0.0, is_amo=False,
        ),
        "2.0",
        _request_timeout=HTTP_TIMEOUT,
    )
    cancelled = orders.cancel_order(placed.data.order_id, "2.0", _request_timeout=HTTP_TIMEOUT)
    return {"profile": profile, "funds": funds, "ltp": ltp, "placed": placed,
            "cancelled": cancelled}


class Daemon:
    """`upkeep serve` in front of the simulator: one account holding the simulator's token
    (static strategy), on the simulator's clock, with one token:read API key."""

    def __init__(self, sim: Sim, token: str) -> None:
        self.sim = sim
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        d = sim.tmp.name
        self.config = os.path.join(d, "upkeep.toml")
        self.log_path = os.path.join(d, "daemon.log")
        c = sim.creds
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(
                f"""[server]
listen = "127.0.0.1:{self.port}"
[store]
url = "sqlite://{d}/upkeep.db"
key_file = "{d}/upkeep.key"
[upstox]
api_url = "{sim.base}"
order_url = "{sim.base}"
login_url = "{sim.base}"
feed_url = "ws://127.0.0.1:{sim.port}"
sandbox_url = "{sim.base}"
follow_sim_clock = true
[[account]]
id = "main"
client_id = "{c['client_id']}"
client_secret = "{c['client_secret']}"
redirect_uri = "{c['redirect_uri']}"
user_id = "{c['ucc']}"
renew = ["static"]
access_token = "{token}"
"""
            )
        self.proc: subprocess.Popen | None = None
        self.key = ""

    def run(self, *args: str) -> str:
        out = subprocess.run(
            [UPKEEP_BIN, *args, "--config", self.config],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        if out.returncode != 0:
            raise SimError(f"upkeep {' '.join(args)} exited {out.returncode}: {out.stderr}")
        return out.stdout

    def start(self) -> "Daemon":
        self.run("keygen")
        self.key = self.run("apikey", "create", "--name", "sdk-bot", "--scope",
                            "token:read").strip()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [UPKEEP_BIN, "serve", "--config", self.config],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise SimError(f"upkeep serve exited {self.proc.returncode}:\n" + self.log_tail())
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SimError("upkeep serve did not answer /healthz:\n" + self.log_tail())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no daemon log)"


class GatewayCompat(SimCase):
    """The official SDK through upkeep's gateway: `host` and `order_host` point at
    `http://127.0.0.1:<port>/upstox`, `access_token` is an upkeep API key. The bot code is
    the same function as against the simulator directly."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.daemon = Daemon(cls.sim, cls.token.access_token)
        try:
            cls.daemon.start()
        except BaseException:
            sys.stderr.write("daemon log tail:\n" + cls.daemon.log_tail())
            cls.daemon.stop()
            cls.sim.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.stop()
        super().tearDownClass()

    def gateway_client(self) -> RecordingApiClient:
        conf = upstox_client.Configuration()
        conf.sandbox = False
        conf.host = self.daemon.base + "/upstox"  # the two-line change of the README
        conf.order_host = self.daemon.base + "/upstox"
        conf.access_token = self.daemon.key  # an upkeep API key, not an Upstox token
        conf.verify_ssl = True
        conf.proxy = None
        client = RecordingApiClient(conf)
        _CLIENTS.append(client)
        return client

    def test_the_same_bot_runs_through_the_gateway_with_an_upkeep_key(self):
        self.assertFalse(self.daemon.key.startswith("eyJ"), "the bot holds no Upstox token")
        direct = bot(self.client())
        via = bot(self.gateway_client())
        self.assertEqual(via["profile"].data.user_id, self.sim.creds["ucc"])
        self.assertEqual(via["profile"].data.user_id, direct["profile"].data.user_id)
        self.assertIsInstance(via["funds"].data["equity"].available_margin, float)
        self.assertIn("NSE_EQ:NHPC", via["ltp"].data)
        self.assertEqual(via["ltp"].data["NSE_EQ:NHPC"].instrument_token, LTPC_KEY)
        self.assertTrue(via["placed"].data.order_id)
        self.assertEqual(via["cancelled"].data.order_id, via["placed"].data.order_id)

    def test_a_wrong_key_is_refused_before_upstox_in_upstox_error_shape(self):
        conf_client = self.gateway_client()
        conf_client.configuration.access_token = "not-an-upkeep-key"
        with self.assertRaises(ApiException) as ctx:
            upstox_client.UserApi(conf_client).get_profile("2.0", _request_timeout=HTTP_TIMEOUT)
        self.assertEqual(ctx.exception.status, 401)
        first = assert_error_envelope(self, ctx.exception.body, "UPKEEP_UNAUTHORIZED")
        self.assertIn("API key", first["message"])


# ---------------------------------------------------------------------------------------------
# REST


class RestCompat(SimCase):
    def test_sdk_is_the_pinned_version(self):
        import importlib.metadata

        self.assertEqual(importlib.metadata.version("upstox-python-sdk"), SDK_VERSION)

    def test_token_exchange_parses_into_token_response(self):
        t = self.token
        self.assertIsInstance(t, upstox_client.TokenResponse)
        self.assertIsInstance(t.access_token, str)
        self.assertTrue(t.access_token)
        self.assertEqual(t.user_id, self.sim.creds["ucc"])
        self.assertIsInstance(t.is_active, bool)
        self.assertIsInstance(t.poa, bool)
        self.assertTrue(set(t.order_types) <= {"MARKET", "LIMIT", "SL", "SL-M"})
        raw = self.token_raw
        self.assertNotIn("data", raw, "the token response is a flat object, not a data envelope")
        assert_keys(
            self,
            raw,
            ["email", "exchanges", "products", "broker", "user_id", "user_name",
             "order_types", "user_type", "poa", "is_active", "access_token"],
            "token response",
        )
        assert_matches_model(self, raw, "TokenResponse")

    def test_authorization_code_is_single_use(self):
        c = self.sim.creds
        with self.assertRaises(ApiException) as ctx:
            upstox_client.LoginApi(sdk_client(self.sim)).token(
                api_version="2.0",
                code=self.token_code,
                client_id=c["client_id"],
                client_secret=c["client_secret"],
                redirect_uri=c["redirect_uri"],
                grant_type="authorization_code",
                _request_timeout=HTTP_TIMEOUT,
            )
        self.assertTrue(400 <= ctx.exception.status < 500, ctx.exception.status)
        assert_error_envelope(self, ctx.exception.body)

    def test_get_profile_parses_and_names_the_user(self):
        client = self.client()
        resp = upstox_client.UserApi(client).get_profile("2.0", _request_timeout=HTTP_TIMEOUT)
        self.assertIsInstance(resp, upstox_client.GetProfileResponse)
        self.assertEqual(resp.status, "success")
        self.assertIsInstance(resp.data, upstox_client.ProfileData)
        self.assertEqual(resp.data.user_id, self.sim.creds["ucc"])
        self.assertIsInstance(resp.data.is_active, bool)
        raw = client.last_raw
        assert_keys(
            self,
            raw["data"],
            ["email", "exchanges", "products", "broker", "user_id", "user_name",
             "order_types", "user_type", "poa", "is_active"],
            "profile data",
        )
        assert_matches_model(self, raw, "GetProfileResponse")

    def test_get_user_fund_margin_parses_outside_the_maintenance_window(self):
        client = self.client()
        resp = upstox_client.UserApi(client).get_user_fund_margin(
            "2.0", _request_timeout=HTTP_TIMEOUT
        )
        self.assertIsInstance(resp, upstox_client.GetUserFundMarginResponse)
        self.assertEqual(resp.status, "success")
        self.assertIn("equity", resp.data)
        equity = resp.data["equity"]
        self.assertIsInstance(equity, upstox_client.UserFundMarginData)
        self.assertIsInstance(equity.available_margin, float)
        raw = client.last_raw
        for segment, funds in raw["data"].items():
            assert_keys(
                self,
                funds,
                ["used_margin", "payin_amount", "span_margin", "adhoc_margin",
                 "notional_cash", "available_margin", "exposure_margin"],
                f"funds {segment}",
            )
        assert_matches_model(self, raw, "GetUserFundMarginResponse")

    def test_get_ltp_v3_parses_and_returns_each_key(self):
        client = self.client()
        keys = [LTPC_KEY, FULL_INDEX_KEY]
        resp = upstox_client.MarketQuoteV3Api(client).get_ltp(
            instrument_key=",".join(keys), _request_timeout=HTTP_TIMEOUT
        )
        self.assertIsInstance(resp, upstox_client.GetMarketQuoteLastTradedPriceResponseV3)
        self.assertEqual(resp.status, "success")
        by_token = {q.instrument_token: (name, q) for name, q in resp.data.items()}
        self.assertEqual(set(by_token), set(keys))
        for key, (name, quote) in by_token.items():
            self.assertIsInstance(quote, upstox_client.MarketQuoteSymbolLtpV3)
            self.assertIsInstance(quote.last_price, float, key)
            self.assertGreater(quote.last_price, 0, key)
            segment = key.split("|", 1)[0]
            self.assertTrue(name.startswith(segment + ":"), f"map key {name!r} is SEGMENT:SYMBOL")
        self.assertIn("NSE_EQ:NHPC", resp.data)
        assert_matches_model(self, client.last_raw, "GetMarketQuoteLastTradedPriceResponseV3")


class MarketCalendarCompat(SimCase):
    """MarketHolidaysAndTimingsApi against the simulator's default calendar (its clock is on
    Monday 2026-11-23: the 2026 calendar, with the Muhurat session on Friday 2026-11-06)."""

    def calendar_api(self, token: str = ""):
        client = sdk_client(self.sim, token)
        return client, upstox_client.MarketHolidaysAndTimingsApi(client)

    def test_get_holidays_parses_the_years_dates(self):
        client, api = self.calendar_api()  # the SDK sends no token for holidays
        resp = api.get_holidays(_request_timeout=HTTP_TIMEOUT)
        self.assertIsInstance(resp, upstox_client.GetHolidayResponse)
        self.assertEqual(resp.status, "success")
        self.assertTrue(resp.data)
        for day in resp.data:
            self.assertIsInstance(day, upstox_client.HolidayData)
            self.assertEqual(day._date.year, 2026)
        types = {d.holiday_type for d in resp.data}
        self.assertIn("SETTLEMENT_HOLIDAY", types)
        budget = [d for d in resp.data if d._date.weekday() == 5 and d.open_exchanges]
        self.assertTrue(budget, "a Saturday special session is listed")
        session = budget[0].open_exchanges[0]
        self.assertIsInstance(session, upstox_client.ExchangeTimingData)
        self.assertIsInstance(session.start_time, int)
        self.assertLess(session.start_time, session.end_time)
        assert_matches_model(self, client.last_raw, "GetHolidayResponse")

    def test_get_holiday_of_one_date(self):
        client, api = self.calendar_api()
        resp = api.get_holiday("2026-11-06", _request_timeout=HTTP_TIMEOUT)
        self.assertEqual(len(resp.data), 1)
        muhurat = resp.data[0]
        self.assertEqual(muhurat.holiday_type, "TRADING_HOLIDAY")
        nse = [s for s in muhurat.open_exchanges if s.exchange == "NSE"]
        self.assertEqual(len(nse), 1)
        # 18:00-19:00 IST = 12:30-13:30 UTC.
        start = dt.datetime.fromtimestamp(nse[0].start_time / 1000, dt.timezone.utc)
        self.assertEqual((start.hour, start.minute), (12, 30))
        self.assertEqual(nse[0].end_time - nse[0].start_time, 3_600_000)
        assert_matches_model(self, client.last_raw, "GetHolidayResponse")
        self.assertEqual(api.get_holiday("2026-11-23", _request_timeout=HTTP_TIMEOUT).data, [])
        with self.assertRaises(ApiException) as ctx:
            api.get_holiday("2026-02-30", _request_timeout=HTTP_TIMEOUT)
        self.assertEqual(ctx.exception.status, 400)
        assert_error_envelope(self, ctx.exception.body, "UDAPI1088")

    def test_get_market_timings_are_empty_on_a_closed_day(self):
        client, api = self.calendar_api()
        resp = api.get_exchange_timings("2026-11-23", _request_timeout=HTTP_TIMEOUT)
        self.assertIsInstance(resp, upstox_client.GetExchangeTimingResponse)
        by_exchange = {t.exchange: t for t in resp.data}
        self.assertIn("NSE", by_exchange)
        self.assertIn("MCX", by_exchange)
        assert_matches_model(self, client.last_raw, "GetExchangeTimingResponse")
        sunday = api.get_exchange_timings("2026-11-22", _request_timeout=HTTP_TIMEOUT)
        self.assertEqual(sunday.data, [])

    def test_get_market_status_needs_the_token_and_says_open_in_market_hours(self):
        client, api = self.calendar_api(self.token.access_token)
        resp = api.get_market_status("NSE", _request_timeout=HTTP_TIMEOUT)
        self.assertIsInstance(resp, upstox_client.GetMarketStatusResponse)
        self.assertIsInstance(resp.data, upstox_client.MarketStatusData)
        self.assertEqual(resp.data.exchange, "NSE")
        self.assertEqual(resp.data.status, "NORMAL_OPEN")
        self.assertIsInstance(resp.data.last_updated, int)
        assert_matches_model(self, client.last_raw, "GetMarketStatusResponse")
        _, anonymous = self.calendar_api()
        with self.assertRaises(ApiException) as ctx:
            anonymous.get_market_status("NSE", _request_timeout=HTTP_TIMEOUT)
        self.assertEqual(ctx.exception.status, 401)


def assert_error_envelope(tc: unittest.TestCase, body, code: str | None = None) -> dict:
    tc.assertTrue(body, "error response has an empty body")
    parsed = json.loads(body)
    tc.assertEqual(parsed.get("status"), "error", parsed)
    tc.assertIsInstance(parsed.get("errors"), list, parsed)
    tc.assertTrue(parsed["errors"], parsed)
    first = parsed["errors"][0]
    # The SDK's Problem model reads the camelCase keys; the docs' snake_case ones are current.
    assert_matches_model(tc, first, "Problem")
    tc.assertIn("errorCode", first)
    tc.assertIn("error_code", first)
    if code is not None:
        tc.assertEqual(first["errorCode"], code)
        tc.assertEqual(first["error_code"], code)
    return first


class TokenExpiryCompat(SimCase):
    def test_expired_token_raises_api_exception_401_udapi100050(self):
        api = upstox_client.UserApi(self.client())
        api.get_profile("2.0", _request_timeout=HTTP_TIMEOUT)  # valid before 03:30
        self.sim.jump_to_ist(AFTER_EXPIRY_IST)
        with self.assertRaises(ApiException) as ctx:
            api.get_profile("2.0", _request_timeout=HTTP_TIMEOUT)
        self.assertEqual(ctx.exception.status, 401)
        self.assertIn("UDAPI100050", ctx.exception.body.decode() if isinstance(
            ctx.exception.body, bytes) else ctx.exception.body)
        assert_error_envelope(self, ctx.exception.body, "UDAPI100050")


# ---------------------------------------------------------------------------------------------
# market data feed v3


class _WebsocketShim:
    """Stands in for the `websocket` module inside the SDK's feeder module only: everything is
    the real websocket-client, except that WebSocketApp is opened on the simulator instead of
    the hard-coded wss://api.upstox.com URL. The SDK's own connect() code still runs."""

    def __init__(self, real, local_url: str, seen: list) -> None:
        self._real = real
        self._local_url = local_url
        self._seen = seen

    def __getattr__(self, name):
        return getattr(self._real, name)

    def WebSocketApp(self, url, *args, **kwargs):  # noqa: N802 (mirrors the library name)
        self._seen.append((url, dict(kwargs.get("header") or {})))
        return self._real.WebSocketApp(self._local_url, *args, **kwargs)


class FeedError(AssertionError):
    pass


class MarketFeedCompat(SimCase):
    """One MarketDataStreamerV3 session (ltpc + full), collected once, checked by each test."""

    messages: list
    seen_urls: list
    rest_ltp: dict

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        try:
            client = sdk_client(cls.sim, cls.token.access_token)
            quotes = upstox_client.MarketQuoteV3Api(client).get_ltp(
                instrument_key=",".join([LTPC_KEY, FULL_EQ_KEY, FULL_INDEX_KEY]),
                _request_timeout=HTTP_TIMEOUT,
            )
            cls.rest_ltp = {q.instrument_token: q.last_price for q in quotes.data.values()}
            cls.messages, cls.seen_urls = cls._stream(cls.feed_client())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def feed_url(cls) -> str:
        return f"ws://127.0.0.1:{cls.sim.port}/v3/feed/market-data-feed"

    @classmethod
    def feed_client(cls):
        return sdk_client(cls.sim, cls.token.access_token)

    @classmethod
    def log_tail(cls) -> str:
        return cls.sim.log_tail()

    @classmethod
    def _stream(cls, client) -> tuple:
        events: queue.Queue = queue.Queue()
        seen_urls: list = []
        local_url = cls.feed_url()
        real_ws = sdk_feeder_module.websocket
        sdk_feeder_module.websocket = _WebsocketShim(real_ws, local_url, seen_urls)
        streamer = MarketDataStreamerV3(client, [LTPC_KEY], "ltpc")

        def on_open():
            events.put(("open", None))
            try:
                streamer.subscribe([FULL_EQ_KEY, FULL_INDEX_KEY], "full")
            except Exception as e:  # reported to the main thread
                events.put(("error", e))

        streamer.on("open", on_open)
        streamer.on("message", lambda m: events.put(("message", m)))
        streamer.on("error", lambda e: events.put(("error", e)))
        streamer.on("close", lambda code, msg: events.put(("close", (code, msg))))
        streamer.on("reconnecting", lambda m: events.put(("reconnecting", m)))
        try:
            streamer.connect()
            messages = cls._collect(events)
        finally:
            sdk_feeder_module.websocket = real_ws
            if streamer.feeder is not None and streamer.feeder.ws is not None:
                streamer.disconnect()
            join_feed_threads()
        return messages, seen_urls

    @classmethod
    def _collect(cls, events: queue.Queue) -> list:
        """Messages until every key has been seen in its mode and one live tick came, or fail."""
        messages: list = []
        opened = False
        deadline = time.monotonic() + FEED_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FeedError(
                    f"feed incomplete after {FEED_TIMEOUT:.0f}s (opened={opened}); got "
                    f"{len(messages)} messages: {json.dumps(messages)[:1500]}\n"
                    + cls.log_tail()
                )
            try:
                kind, payload = events.get(timeout=left)
            except queue.Empty:
                continue
            if kind == "open":
                opened = True
            elif kind == "message":
                messages.append(payload)
                if feed_complete(messages):
                    return messages
            elif kind in ("error", "close", "reconnecting"):
                raise FeedError(
                    f"feed {kind}: {payload!r} after {len(messages)} messages\n"
                    + cls.log_tail()
                )

    def test_sdk_opens_its_hard_coded_url_with_the_bearer_token(self):
        url, headers = self.seen_urls[0]
        self.assertEqual(url, SDK_FEED_URL, "the SDK's hard-coded feed URL changed")
        self.assertEqual(headers.get("Authorization"), "Bearer " + self.token.access_token)

    def test_market_info_comes_first_and_only_first(self):
        first = self.messages[0]
        self.assertEqual(first.get("type"), "market_info", f"first message: {first}")
        self.assertIsInstance(first.get("currentTs"), str, "int64 currentTs decodes to a string")
        status = first["marketInfo"]["segmentStatus"]
        self.assertIsInstance(status, dict)
        self.assertEqual(status.get("NSE_EQ"), "NORMAL_OPEN", "10:00 IST on a Monday")
        for m in self.messages[1:]:
            # initial_feed is enum value 0, so MessageToDict leaves "type" out.
            self.assertIn(m.get("type", "initial_feed"), ("initial_feed", "live_feed"), m)

    def test_live_ticks_follow_the_snapshots(self):
        self.assertTrue(
            any(m.get("type") == "live_feed" for m in self.messages[1:]),
            "no live_feed tick arrived",
        )

    def test_ltpc_mode_feed_has_float_ltp(self):
        ltpc = latest(self.messages, LTPC_KEY)
        self.assertIn("ltpc", ltpc, ltpc)
        self.assertIsInstance(ltpc["ltpc"]["ltp"], float)
        self.assertIsInstance(ltpc["ltpc"].get("ltt"), str, "int64 ltt decodes to a string")
        self.assertNotIn("fullFeed", ltpc)

    def test_full_mode_equity_feed_is_market_full_feed_d5(self):
        eq = latest(self.messages, FULL_EQ_KEY)
        self.assertEqual(eq.get("requestMode"), "full_d5", eq)
        mff = eq["fullFeed"]["marketFF"]
        self.assertIsInstance(mff["ltpc"]["ltp"], float)
        quotes = mff["marketLevel"]["bidAskQuote"]
        self.assertEqual(len(quotes), 5, "full is 5-level depth")
        for q in quotes:
            self.assertIsInstance(q.get("bidP"), float, q)
            self.assertIsInstance(q.get("askP"), float, q)
            self.assertLess(q["bidP"], q["askP"], q)
        ohlc = mff["marketOHLC"]["ohlc"]
        self.assertTrue(ohlc)
        self.assertTrue({o.get("interval") for o in ohlc} <= {"1d", "I1"}, ohlc)

    def test_full_mode_index_feed_is_index_full_feed(self):
        idx = latest(self.messages, FULL_INDEX_KEY)
        self.assertEqual(idx.get("requestMode"), "full_d5", idx)
        iff = idx["fullFeed"]["indexFF"]
        self.assertIsInstance(iff["ltpc"]["ltp"], float)
        self.assertTrue(iff["marketOHLC"]["ohlc"])

    def test_feed_prices_agree_with_rest_ltp(self):
        # A bot that seeds from GET /v3/market-quote/ltp and then follows the feed must see
        # one market: both walk within about 2% of the same previous close.
        feed_ltp = {
            LTPC_KEY: latest(self.messages, LTPC_KEY)["ltpc"]["ltp"],
            FULL_EQ_KEY: latest(self.messages, FULL_EQ_KEY)["fullFeed"]["marketFF"]["ltpc"]["ltp"],
            FULL_INDEX_KEY: latest(self.messages, FULL_INDEX_KEY)["fullFeed"]["indexFF"]["ltpc"][
                "ltp"
            ],
        }
        for key, ltp in feed_ltp.items():
            rest = self.rest_ltp[key]
            self.assertLess(
                abs(ltp - rest) / rest,
                0.05,
                f"{key}: feed ltp {ltp} vs REST LTP v3 last_price {rest}",
            )


# ---------------------------------------------------------------------------------------------
# market data feed v3 through the daemon's relay


class Daemon:
    """`upkeep serve` on the simulator's clock, holding the SDK's token (strategy `static`),
    with a `token:read` API key for the relay."""

    def __init__(self, sim: Sim, token: str) -> None:
        self.sim = sim
        self.token = token
        self.tmp = tempfile.TemporaryDirectory(prefix="upkeep-relay-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(self.tmp.name, "upkeep.toml")
        self.log_path = os.path.join(self.tmp.name, "daemon.log")
        self.proc: subprocess.Popen | None = None
        self.key = ""

    def _cli(self, *args: str, stdin: str | None = None) -> str:
        r = subprocess.run(
            [UPKEEP_BIN, "--config", self.config, *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )
        if r.returncode != 0:
            raise AssertionError(f"upkeep {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def start(self) -> "Daemon":
        c = self.sim.creds
        with open(self.config, "w") as f:
            f.write(
                f"""[server]
listen = "127.0.0.1:{self.port}"
[store]
url = "sqlite://upkeep.db"
key_file = "upkeep.key"
[upstox]
api_url = "{self.sim.base}"
order_url = "{self.sim.base}"
login_url = "{self.sim.base}"
follow_sim_clock = true
[[account]]
id = "main"
env = "live"
client_id = "{c["client_id"]}"
client_secret = "{c["client_secret"]}"
redirect_uri = "{c["redirect_uri"]}"
renew = ["static"]
"""
            )
        self._cli("keygen")
        self._cli("token", "set", "--account", "main", "-", stdin=self.token)
        self.key = self._cli("apikey", "create", "--name", "sdk", "--scope", "token:read").strip()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [UPKEEP_BIN, "--config", self.config, "serve"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"upkeep serve exited with {self.proc.returncode}:\n" + self.log_tail())
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("upkeep serve did not answer /healthz:\n" + self.log_tail())
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "".join(f.read().decode("utf-8", "replace").splitlines(True)[-lines:])
        except OSError:
            return "(no daemon log)"


class RelayFeedCompat(MarketFeedCompat):
    """The same MarketDataStreamerV3 session, through upkeep's relay instead of the
    simulator: the SDK's configuration host is the daemon's `/upstox` prefix, its access
    token an upkeep API key, and its hard-coded feed URL is opened on the relay's
    `/upstox/v3/feed/market-data-feed`. Every check of MarketFeedCompat applies."""

    daemon: Daemon

    @classmethod
    def setUpClass(cls) -> None:
        super(MarketFeedCompat, cls).setUpClass()  # SimCase: the simulator and a token
        try:
            cls.daemon = Daemon(cls.sim, cls.token.access_token).start()
        except BaseException:
            cls.sim.stop()
            raise
        try:
            client = sdk_client(cls.sim, cls.token.access_token)
            quotes = upstox_client.MarketQuoteV3Api(client).get_ltp(
                instrument_key=",".join([LTPC_KEY, FULL_EQ_KEY, FULL_INDEX_KEY]),
                _request_timeout=HTTP_TIMEOUT,
            )
            cls.rest_ltp = {q.instrument_token: q.last_price for q in quotes.data.values()}
            cls.messages, cls.seen_urls = cls._stream(cls.feed_client())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.stop()
        super().tearDownClass()

    @classmethod
    def feed_url(cls) -> str:
        return f"ws://127.0.0.1:{cls.daemon.port}/upstox/v3/feed/market-data-feed"

    @classmethod
    def feed_client(cls):
        conf = upstox_client.Configuration()
        conf.sandbox = False
        conf.host = f"{cls.daemon.base}/upstox"
        conf.order_host = f"{cls.daemon.base}/upstox"
        conf.access_token = cls.daemon.key
        conf.verify_ssl = True
        conf.proxy = None
        client = RecordingApiClient(conf)
        _CLIENTS.append(client)
        return client

    @classmethod
    def log_tail(cls) -> str:
        return "daemon log:\n" + cls.daemon.log_tail() + "\nsimulator log:\n" + cls.sim.log_tail()

    def test_sdk_opens_its_hard_coded_url_with_the_bearer_token(self):
        url, headers = self.seen_urls[0]
        self.assertEqual(url, SDK_FEED_URL, "the SDK's hard-coded feed URL changed")
        self.assertEqual(headers.get("Authorization"), "Bearer " + self.daemon.key)
        self.assertNotEqual(self.daemon.key, self.token.access_token)


def latest(messages: list, key: str) -> dict:
    for m in reversed(messages):
        feed = (m.get("feeds") or {}).get(key)
        if feed is not None:
            return feed
    raise AssertionError(f"no feed for {key}")


def feed_complete(messages: list) -> bool:
    def has(key, pred):
        return any(pred((m.get("feeds") or {}).get(key) or {}) for m in messages[1:])

    return (
        has(LTPC_KEY, lambda f: "ltpc" in f)
        and has(FULL_EQ_KEY, lambda f: "marketFF" in f.get("fullFeed", {}))
        and has(FULL_INDEX_KEY, lambda f: "indexFF" in f.get("fullFeed", {}))
        and any(m.get("type") == "live_feed" for m in messages[1:])
    )


def join_feed_threads(timeout: float = 15.0) -> None:
    """The SDK runs websocket-client in a non-daemon thread; make sure it ended."""
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t is threading.current_thread() or t.daemon:
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise AssertionError(f"SDK feed thread {t.name} still running after disconnect")


def main() -> int:
    """Runs this module's tests and ends with a plain 'N passed, N failed' line."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped) - len(result.expectedFailures)
    sys.stdout.flush()
    print(f"sdk-compat: {passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/: the starting inputs of each fuzz target, taken from real
inputs in the repository (test fixtures, the golden feed frames, `upkeep config example`,
payloads quoted in unit tests). Re-run after changing a target's input layout:

    python3 fuzz/make-seeds.py

libFuzzer only reads these (run.sh passes them after fuzz/corpus/<target>/, which is
where new inputs go), so minimizing the corpus never loses them.
"""

import base64
import json
import os
import re
import shutil
import struct

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def rust_const(path, name):
    """The text of `const NAME: &str = r#"..."#;` in a Rust source file."""
    src = read(path).decode()
    m = re.search(name + r': &str = r#"(.*?)"#;', src, re.S)
    assert m, f"{name} not found in {path}"
    return m.group(1)


HEADER = '{"typ":"JWT","key_id":"sk_v1.0","alg":"HS256"}'
TOKEN_A = rust_const("crates/upkeep-core/src/testing.rs", "TOKEN_A_PAYLOAD")
TOKEN_B = rust_const("crates/upkeep-core/src/testing.rs", "TOKEN_B_PAYLOAD")
SIG = b"upkeep-test-signature-not-valid!"


def jwt(payload):
    return f"{b64url(HEADER.encode())}.{b64url(payload.encode())}.{b64url(SIG)}"


def jwt_claims():
    t = "jwt_claims"
    payloads = {
        "token_a": TOKEN_A,  # daily token
        "token_b": TOKEN_B,  # sandbox token (30-day rule)
        "minimal": '{"sub":"AB1234","exp":1770328800}',
        "float_exp": '{"sub":"A","exp":1770328800.0}',
        "extended": '{"sub":"AB1234","iat":1770250767,"exp":1801872000}',
        "mismatch": '{"sub":"AB1234","iat":1770250767,"exp":1770334200}',
        "null_exp": '{"sub":"A","exp":null}',
        "huge_exp": '{"sub":"A","exp":99999999999999999}',
        "exp_before_iat": '{"sub":"A","iat":1770328800,"exp":1770250767}',
        "not_object": "[1,2]",
    }
    for name, p in payloads.items():
        write(t, f"payload-{name}", b"\x01" + p.encode())
        write(t, f"token-{name}", b"\x00" + jwt(p).encode())
    write(t, "token-a-bearer", "\x00  Bearer " + jwt(TOKEN_A) + "\n")
    padded = base64.urlsafe_b64encode(b'{"sub":"AB1234","exp":1770328800,"x":"?"}').decode()
    write(t, "token-padded", f"\x00eyJhbGciOiJIUzI1NiJ9.{padded}.c2ln")
    # Tokens quoted in the repository's tests.
    src = b"".join(
        read(os.path.join(dp, f)[len(ROOT) + 1 :])
        for dp, _, fs in os.walk(os.path.join(ROOT, "crates"))
        for f in fs
        if f.endswith(".rs")
    ).decode(errors="replace")
    for i, tok in enumerate(sorted(set(re.findall(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", src)))):
        write(t, f"token-from-tests-{i}", "\x00" + tok)
    for i, bad in enumerate(["", "abc", "a.b", "a.b.c.d", ".b.c", "e30.!!!.sig", "***.e30.sig"]):
        write(t, f"malformed-{i}", "\x00" + bad)


NOTIFIER = {
    "client_id": "615b1297-d443-3b39-ba19-1927fbcdddc7",
    "user_id": "2ZCDQ9",
    "access_token": jwt(TOKEN_A),
    "token_type": "Bearer",
    "expires_at": "1731448800000",
    "issued_at": "1731412800000",
    "message_type": "access_token",
}


def notifier():
    t = "notifier"
    # The documented payload (webhook.rs tests), as the simulator and Upstox send it.
    write(t, "documented", json.dumps(NOTIFIER))
    write(t, "documented-compact", json.dumps(NOTIFIER, separators=(",", ":")))
    write(t, "dummy-token", json.dumps({**NOTIFIER, "access_token": "eyJ0eXAiOiJKV1QiLCJrZXlfaWQiOiJza192MS4wIiwiYWxnIjoiSFMyNTYifQ.e30.c2VjcmV0LXNpZw"}))
    write(t, "numeric-expiry", json.dumps({**NOTIFIER, "expires_at": 1731448800000}))
    write(t, "wrong-message-type", json.dumps({**NOTIFIER, "message_type": "order"}))
    write(t, "expires-before-issued", json.dumps({**NOTIFIER, "issued_at": "1731448800000"}))
    write(t, "missing-token", json.dumps({k: v for k, v in NOTIFIER.items() if k != "access_token"}))


def envelope_input(status, body, bearer=True, retry_after=b""):
    flags = (1 if bearer else 0) | (2 if retry_after else 0)
    return struct.pack(">HBB", status, flags, len(retry_after)) + retry_after + body.encode()


def error_envelope():
    t = "error_envelope"
    both = '{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"invalidValue":null,"error_code":"UDAPI100050","property_path":null,"invalid_value":null}]}'
    cases = {
        # error envelopes (envelope.rs / error.rs tests: live captures and docs)
        "401-both-spellings": (401, both),
        "401-snake-only": (401, '{"status":"error","errors":[{"error_code":"UDAPI100067","message":"The API you are trying to access is not permitted with an extended_token","property_path":null,"invalid_value":null}]}'),
        "429-camel-only": (429, '{"status":"error","errors":[{"errorCode":"UDAPI10005","message":"Too Many Request Sent"}]}'),
        "423-maintenance": (423, '{"status":"error","errors":[{"errorCode":"UDAPI100072","message":"m","error_code":"UDAPI100072"}]}'),
        "400-login-service": (400, '{"success":false,"error":{"code":"1017062","message":"Invalid OTP"},"data":null}'),
        "200-error-in-data": (200, '{"success":true,"data":{"status":"error","errors":[{"errorCode":"UDAPI100073","message":"Your \'client_id\' is inactive"}]}}'),
        "200-login-blocked": (200, '{"success":false,"error":{"code":"LOCKED","message":"Account blocked"}}'),
        "400-oauth2": (400, '{"error":"invalid_grant","error_description":"refresh token revoked"}'),
        "502-html": (502, "<html>bad gateway</html>"),
        "401-empty": (401, ""),
        "401-token-echo": (401, '{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"bad token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyWkNEUTkifQ.sig for UDAPI100050"}]}'),
        # success payloads (models.rs tests: docs samples)
        "200-profile": (200, '{"status":"success","data":{"email":"e","exchanges":["NSE"],"products":["D"],"broker":"UPSTOX","user_id":"2ZCDQ9","user_name":"n","order_types":["MARKET"],"user_type":"individual","poa":false,"ddpi":false,"is_active":true}}'),
        "200-funds": (200, '{"status":"success","data":{"equity":{"used_margin":null,"available_margin":10.5},"commodity":null}}'),
        "200-ltp": (200, '{"status":"success","data":{"NSE_FO:NIFTY2543021600PE":{"last_price":303.9,"instrument_token":"NSE_FO|51834","ltq":75,"volume":170325,"cp":29.0}}}'),
        "200-ltp-nulls": (200, '{"status":"success","data":{"NSE_EQ:NHPC":{"last_price":52.05,"instrument_token":"NSE_EQ|INE848E01016","ltq":75.0,"volume":null,"cp":null}}}'),
        "200-token-grant": (200, '{"email":"a@b.c","exchanges":["NSE","NFO","BSE","CDS","BFO","BCD"],"products":["D","CO","I"],"broker":"UPSTOX","user_id":"2ZCDQ9","user_name":"Jane","order_types":["MARKET","LIMIT","SL","SL-M"],"user_type":"individual","poa":false,"ddpi":false,"is_active":true,"access_token":"tok.en.a","extended_token":"tok.en.b"}'),
        "200-refresh-grant": (200, '{"access_token":"new.at","token_type":"Bearer","expires_in":3600,"refresh_token":"new-rt"}'),
        "200-token-request-ack": (200, '{"status":"success","data":{"authorization_expiry":"1732226400000","notifier_url":"https://example.com/notify"}}'),
        "200-logout": (200, '{"status":"success","data":true}'),
    }
    for name, (status, body) in cases.items():
        write(t, name, envelope_input(status, body))
    write(t, "429-retry-after-seconds", envelope_input(429, "", retry_after=b"120"))
    write(t, "503-retry-after-date", envelope_input(503, "", retry_after=b"Wed, 21 Oct 2015 07:28:00 GMT"))
    write(t, "403-no-bearer", envelope_input(403, "", bearer=False))


def feed_frame():
    t = "feed_frame"
    # The golden frames (serialized by the official SDK): the project's copy, and the
    # shared reference if this checkout sits next to it.
    seen = set()
    for d in ["tests/fixtures/feed", "../shared/reference/feed-frames"]:
        full = os.path.join(ROOT, d)
        if not os.path.isdir(full):
            continue
        for f in sorted(os.listdir(full)):
            data = read(os.path.join(d, f)) if f.endswith(".bin") else None
            if data is not None and data not in seen:
                seen.add(data)
                write(t, f[: -len(".bin")], data)
    # Hand-made frames from tests/feed_codec.rs.
    write(t, "type-live-ts5", bytes([0x08, 0x01, 0x18, 0x05]))
    write(t, "wrong-wire-type", bytes([0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x01]))
    write(t, "unknown-and-group", bytes([0x48, 0x05, 0x53, 0x08, 0x01, 0x54, 0x5D, 0, 0, 0, 0, 0x08, 0x02]))


def example_toml():
    return rust_const("crates/upkeep-core/src/config.rs", "EXAMPLE_TOML")


def config_toml():
    t = "config_toml"
    ex = example_toml()
    write(t, "example", ex)
    write(t, "empty", "")
    write(t, "example-with-env", ex + "\n#% env\nUPKEEP_SERVER__LISTEN=0.0.0.0:7878\nUPKEEP_RENEWAL__HOLIDAYS=2026-11-24,2026-12-25\nUPSTOX_PIN_CODE=654321\n")
    write(t, "env-only", "\n#% env\nUPSTOX_ACCESS_TOKEN=" + jwt(TOKEN_A) + "\nUPSTOX_CLIENT_ID=key\nUPSTOX_CLIENT_SECRET=sec\nUPSTOX_USERNAME=9876543210\nUPSTOX_PIN_CODE=123456\nUPSTOX_TOTP_SECRET=JBSWY3DPEHPK3PXP\n")
    write(t, "sandbox-env", "\n#% env\nUPSTOX_SANDBOX_TOKEN=" + jwt(TOKEN_B) + "\n")
    write(t, "static-token", '[[account]]\nid = "main"\nrenew = ["static"]\naccess_token = "' + jwt(TOKEN_A) + '"\n')
    write(t, "refresh-token", '[[account]]\nid = "svc"\nrenew = "refresh_token"\n[account.refresh_token]\ntoken_url = "https://tokens.example.com/upstox"\nrefresh_token = "rt-0123456789"\n')
    write(t, "single-brackets", '[account]\nid = "main"\n')
    write(t, "bad-values", '[renewal]\nwindow_start = "02:00"\ndeadline = "23:00"\njitter = "1h30m"\nhealth_check_interval = "5s"\nholidays = [2026-11-24]\n[thresholds]\nwarning = "1h"\ncritical = "3h"\n')


def config_import():
    t = "config_import"
    secrets = [
        '\nother = 1\n[upstox]\napi_key = "key-1"\napi_secret = "sec-1"\nredirect_uri = "http://127.0.0.1:8501/callback"\naccess_token = "a.b.c"\nextra = "ignored"\n',
        '[UPSTOX]\nCLIENT_ID = "key-1"\nCLIENT_SECRET = "sec-1"\nREDIRECT_URI = "http://127.0.0.1:8501/callback"\naccess_token = "a.b.c"\n',
        'UPSTOX_API_KEY = "k"\nUPSTOX_API_SECRET = "s"\n',
        '[upstox]\napi_key="k"\napi_secret="s"\nmobile="9876543210"\npin="123456"\ntotp_secret="JBSWY3DPEHPK3PXP"\n',
        '[upstox]\napi_key = "k1"\nclient_id = "k2"\n',
        '[upstox]\napi_secret = 123456\n',
    ]
    for i, s in enumerate(secrets):
        write(t, f"secrets-toml-{i}", "\x00" + s)
    tok = jwt(TOKEN_A)
    for i, exp in enumerate(['"2026-02-06T03:30:00+05:30"', '"2026-02-05T22:00:00Z"', '"2026-02-06T03:30:00"', "1770328800", "1770328800000", '"1770328800"']):
        write(t, f"tokens-json-{i}", "\x01" + f'{{"access_token": "{tok}", "expires_at": {exp}, "user_id": "X", "n": 1}}')
    write(t, "tokens-json-extended", "\x01" + json.dumps({"access_token": tok, "extended_token": jwt(TOKEN_B), "issued_at": "1770250767"}))
    write(t, "tokens-json-bare", '\x01{"access_token": "a.b.c"}')


if __name__ == "__main__":
    shutil.rmtree(SEEDS, ignore_errors=True)
    jwt_claims()
    notifier()
    error_envelope()
    feed_frame()
    config_toml()
    config_import()
    for t in sorted(os.listdir(SEEDS)):
        print(t, len(os.listdir(os.path.join(SEEDS, t))))

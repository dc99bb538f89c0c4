#!/usr/bin/env python3
"""Verifies signed webhook cases made by the Rust side with Stripe's official Python SDK.

    cargo run --example interop --features testing -- sign OUT.json
    python3 interop/python_verify.py OUT.json

Each case goes through ``stripe.Webhook.construct_event(body, header, secret, tolerance)``
as bytes and as str, and tampered copies must raise ``SignatureVerificationError``. The
SDK reads the real clock and the cases carry fixed (some old) timestamps, so each case's
tolerance is its timestamp's age plus the default 300 s: large enough for that case and
no larger. Prints one line per case and ``N passed, M failed``; exits non-zero on any
failure or when there are no cases.
"""

import json
import sys
import time

import stripe

DEFAULT_TOLERANCE = 300


def expect_rejected(what, fn):
    try:
        fn()
    except stripe.SignatureVerificationError:
        return
    except Exception as e:  # noqa: BLE001 - any other error is a failure too
        raise AssertionError(f"{what}: expected SignatureVerificationError, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"{what} was accepted")


def check_case(case):
    body, header, secret, ts = case["body"], case["header"], case["secret"], case["timestamp"]
    tolerance = max(DEFAULT_TOLERANCE, int(time.time()) - ts + DEFAULT_TOLERANCE)
    expected = json.loads(body)
    for payload in (body.encode("utf-8"), body):
        event = stripe.Webhook.construct_event(payload, header, secret, tolerance)
        if event.to_dict() != expected:
            raise AssertionError("construct_event returned a different event than the body")
    expect_rejected(
        "body with a newline appended",
        lambda: stripe.Webhook.construct_event(body + "\n", header, secret, tolerance),
    )
    expect_rejected(
        "wrong secret",
        lambda: stripe.Webhook.construct_event(body, header, secret + "x", tolerance),
    )
    if ts < time.time() - 3600:
        # Signed over an hour ago: the SDK's default tolerance must refuse it.
        expect_rejected(
            "old timestamp with the default tolerance",
            lambda: stripe.Webhook.construct_event(body, header, secret),
        )


def main():
    if len(sys.argv) != 2:
        print("usage: python3 python_verify.py CASES.json", file=sys.stderr)
        return 2
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    if not isinstance(cases, list):
        raise SystemExit(f"{path} does not hold a JSON array")
    passed = failed = 0
    for i, case in enumerate(cases):
        label = f"case {i} ({case.get('name') or 'unnamed'}; t={case.get('timestamp')}, {len(case.get('body', '').encode())} body bytes)"
        try:
            check_case(case)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed += 1
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"FAIL {label}: {first}")
        else:
            passed += 1
            print(f"ok   {label}")
    if not cases:
        print(f"no cases in {path}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

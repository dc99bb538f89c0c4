#!/usr/bin/env python3
"""Writes signed webhook cases made by Stripe's official Python SDK, for the Rust side.

    python3 interop/python_sign.py OUT.json
    cargo run --example interop --features testing -- verify OUT.json

Headers come from ``stripe.WebhookSignature.generate_signature_header``, the SDK's own
helper for signing test payloads (it uses ``_compute_signature``, the same HMAC that
``Webhook.construct_event`` checks). Each case is {name, secret, timestamp, body, header};
every body is valid JSON.
"""

import json
import sys
import time

import stripe

TIMESTAMPS = [1, 1_000_000_000, 1_700_000_000, 2_000_000_000, 4_102_444_800, 9_999_999_999]
SECRETS = [
    "whsec_test_secret",
    "whsec_5hJ0dDmN3pQr8sTuVwXyZaBcDeFgHiJk",
    "whsec_" + "0123456789abcdef" * 6,  # longer than an HMAC block
    "whsec_clé_日本_🔑",  # the SDK keys the HMAC with the secret's UTF-8 bytes
]


def event(id_, type_, created, obj):
    return json.dumps(
        {
            "id": id_,
            "object": "event",
            "api_version": "2024-06-20",
            "created": created,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
            "data": {"object": obj},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def bodies():
    compact = event(
        "evt_py_compact",
        "customer.created",
        1_700_000_000,
        {"id": "cus_py", "object": "customer", "email": "jenny@example.com", "name": "Jenny Rosen", "metadata": {}},
    )
    unicode = event(
        "evt_py_unicode",
        "customer.updated",
        1_700_000_001,
        {
            "id": "cus_unicode",
            "object": "customer",
            "name": "Zoë Café Müller",
            "description": "日本語のテスト — 東京",
            "metadata": {"emoji": "🎉👩‍💻🇯🇵", "math": "∑ ≠ ∞", "rtl": "مرحبا"},
        },
    )
    crlf = (
        json.dumps(
            {
                "id": "evt_py_crlf",
                "object": "event",
                "type": "invoice.paid",
                "created": 1_700_000_002,
                "livemode": False,
                "data": {"object": {"id": "in_crlf", "object": "invoice", "amount_paid": 4200, "currency": "eur"}},
            },
            indent=2,
        ).replace("\n", "\r\n")
        + "\r\n"
    )
    spaced = (
        '\n\n  {\t"id" :  "evt_py_spaced" ,   \n\n\t\t"object"\t:\t"event",  \n    '
        '"type"    :    "charge.succeeded"  ,\n        "created" : 1700000003 ,\n'
        '\t"livemode":false,\n\t"data" : {   "object" :  {\n\t\t\t"id" : "ch_spaced" , '
        '"object":"charge" ,  "amount" :  999  }   }   \n  }  \n\n'
    )
    escapes = (
        r'{"id":"evt_py_escapes","object":"event","type":"customer.created","created":1700000004,'
        r'"livemode":false,"data":{"object":{"id":"cus_esc","object":"customer",'
        r'"name":"caf\u00e9 \"quoted\" back\\slash \/ tab\t","description":"\ud83c\udf89 surrogate pair"}}}'
    )
    items, size = [], 0
    while size < 64 * 1024 - 256:
        n = len(items)
        item = {
            "id": f"il_{n:06}",
            "object": "line_item",
            "amount": n * 100,
            "description": f"Line item {n} — Größe ✓",
            "quantity": 1,
        }
        size += len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        items.append(item)
    big = event(
        "evt_py_large",
        "invoice.finalized",
        1_700_000_005,
        {"id": "in_large", "object": "invoice", "lines": {"object": "list", "data": items}},
    )
    return [
        ("compact ASCII event", compact),
        ("non-ASCII UTF-8 body (é, 日本, emoji)", unicode),
        ("CRLF pretty-printed body", crlf),
        ("whitespace-heavy body", spaced),
        ("empty object", "{}"),
        ("JSON escapes kept as written", escapes),
        ("~64 KiB body", big),
    ]


def sign(name, secret, timestamp, body):
    json.loads(body)  # every body must be valid JSON
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    if not header.startswith(f"t={timestamp},v1="):
        raise SystemExit(f"unexpected header for {name}: {header}")
    return {"name": f"python sign: {name}", "secret": secret, "timestamp": timestamp, "body": body, "header": header}


def main():
    if len(sys.argv) != 2:
        print("usage: python3 python_sign.py OUT.json", file=sys.stderr)
        return 2
    out = sys.argv[1]
    all_bodies = bodies()
    cases = []
    for i, (what, body) in enumerate(all_bodies):
        cases.append(sign(what, SECRETS[i % len(SECRETS)], TIMESTAMPS[i % len(TIMESTAMPS)], body))
    unicode = all_bodies[1][1]
    for i, secret in enumerate(SECRETS):
        cases.append(sign(f"secret #{i} over the non-ASCII body", secret, TIMESTAMPS[(i + 2) % len(TIMESTAMPS)], unicode))
    cases.append(sign("timestamp is the current time", SECRETS[0], int(time.time()), all_bodies[0][1]))
    # ensure_ascii: the file carries \uXXXX escapes (surrogate pairs for emoji), which the
    # Rust reader must decode back to the same UTF-8 bytes that were signed.
    with open(out, "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=2, ensure_ascii=True)
        f.write("\n")
    print(f"stripe-python {stripe.VERSION}: wrote {len(cases)} cases to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

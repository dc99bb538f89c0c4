#!/usr/bin/env node
// Writes signed webhook cases made by Stripe's official Node.js SDK
// (stripe.webhooks.generateTestHeaderString), for the Rust side to verify:
//
//   node interop/node_sign.js OUT.json
//   cargo run --example interop --features testing -- verify OUT.json
//
// Each case is {name, secret, timestamp, body, header}; every body is valid JSON.
'use strict';

const fs = require('fs');
const Stripe = require('stripe');

const stripe = new Stripe('sk_test_interop_not_used_for_requests');

function event(id, type, created, object) {
  return JSON.stringify({
    id,
    object: 'event',
    api_version: '2024-06-20',
    created,
    livemode: false,
    pending_webhooks: 1,
    request: {id: null, idempotency_key: null},
    type,
    data: {object},
  });
}

function bodies() {
  const compact = event('evt_node_compact', 'customer.created', 1700000000, {
    id: 'cus_node', object: 'customer', email: 'jenny@example.com', name: 'Jenny Rosen', metadata: {},
  });
  const unicode = event('evt_node_unicode', 'customer.updated', 1700000001, {
    id: 'cus_unicode', object: 'customer', name: 'Zoë Café Müller',
    description: '日本語のテスト — 東京',
    metadata: {emoji: '🎉👩‍💻🇯🇵', math: '∑ ≠ ∞', rtl: 'مرحبا'},
  });
  const crlf = JSON.stringify({
    id: 'evt_node_crlf', object: 'event', type: 'invoice.paid', created: 1700000002, livemode: false,
    data: {object: {id: 'in_crlf', object: 'invoice', amount_paid: 4200, currency: 'eur'}},
  }, null, 2).replace(/\n/g, '\r\n') + '\r\n';
  const spaced =
    '\n\n  {\t"id" :  "evt_node_spaced" ,   \n\n\t\t"object"\t:\t"event",  \n    ' +
    '"type"    :    "charge.succeeded"  ,\n        "created" : 1700000003 ,\n' +
    '\t"livemode":false,\n\t"data" : {   "object" :  {\n\t\t\t"id" : "ch_spaced" , ' +
    '"object":"charge" ,  "amount" :  999  }   }   \n  }  \n\n';
  const escapes = String.raw`{"id":"evt_node_escapes","object":"event","type":"customer.created","created":1700000004,"livemode":false,"data":{"object":{"id":"cus_esc","object":"customer","name":"caf\u00e9 \"quoted\" back\\slash \/ tab\t","description":"\ud83c\udf89 surrogate pair"}}}`;
  const items = [];
  let size = 0;
  while (size < 64 * 1024 - 256) {
    const n = items.length;
    const item = {
      id: `il_${String(n).padStart(6, '0')}`, object: 'line_item', amount: n * 100,
      description: `Line item ${n} — Größe ✓`, quantity: 1,
    };
    size += Buffer.byteLength(JSON.stringify(item)) + 1;
    items.push(item);
  }
  const big = event('evt_node_large', 'invoice.finalized', 1700000005, {
    id: 'in_large', object: 'invoice', lines: {object: 'list', data: items},
  });
  return [
    ['compact ASCII event', compact],
    ['non-ASCII UTF-8 body (é, 日本, emoji)', unicode],
    ['CRLF pretty-printed body', crlf],
    ['whitespace-heavy body', spaced],
    ['empty object', '{}'],
    ['JSON escapes kept as written', escapes],
    ['~64 KiB body', big],
  ];
}

// generateTestHeaderString replaces a falsy timestamp (0) with the current time, so none is 0.
const TIMESTAMPS = [1, 1000000000, 1700000000, 2000000000, 4102444800, 9999999999];
const SECRETS = [
  'whsec_test_secret',
  'whsec_5hJ0dDmN3pQr8sTuVwXyZaBcDeFgHiJk',
  'whsec_' + '0123456789abcdef'.repeat(6), // longer than an HMAC block
  'whsec_clé_日本_🔑', // the SDK keys the HMAC with the secret's UTF-8 bytes
];

function sign(name, secret, timestamp, body) {
  JSON.parse(body); // every body must be valid JSON
  const header = stripe.webhooks.generateTestHeaderString({payload: body, secret, timestamp});
  if (!header.startsWith(`t=${timestamp},v1=`)) {
    throw new Error(`unexpected header for ${name}: ${header}`);
  }
  return {name: `node sign: ${name}`, secret, timestamp, body, header};
}

function main() {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: node node_sign.js OUT.json');
    process.exit(2);
  }
  const cases = [];
  const all = bodies();
  all.forEach(([what, body], i) => {
    cases.push(sign(what, SECRETS[i % SECRETS.length], TIMESTAMPS[i % TIMESTAMPS.length], body));
  });
  const unicode = all[1][1];
  SECRETS.forEach((secret, i) => {
    cases.push(sign(`secret #${i} over the non-ASCII body`, secret, TIMESTAMPS[(i + 2) % TIMESTAMPS.length], unicode));
  });
  const now = Math.floor(Date.now() / 1000);
  cases.push(sign('timestamp is the current time', SECRETS[0], now, all[0][1]));
  fs.writeFileSync(out, JSON.stringify(cases, null, 2) + '\n');
  console.log(`stripe-node ${Stripe.PACKAGE_VERSION}: wrote ${cases.length} cases to ${out}`);
}

main();

#!/usr/bin/env node
// Verifies signed webhook cases made by the Rust side with Stripe's official Node.js SDK
// (stripe.webhooks.constructEvent), and checks that tampered copies are rejected:
//
//   cargo run --example interop --features testing -- sign OUT.json
//   node interop/node_verify.js OUT.json
//
// The SDK's clock is pinned to each case's timestamp (constructEvent's receivedAt
// argument), so the default 300 s tolerance applies deterministically.
// Prints one line per case and `N passed, M failed`; exits non-zero on any failure or
// when there are no cases.
'use strict';

const fs = require('fs');
const Stripe = require('stripe');

const stripe = new Stripe('sk_test_interop_not_used_for_requests');
const TOLERANCE = 300;

function expectRejected(what, fn) {
  try {
    fn();
  } catch (e) {
    if (e instanceof Stripe.errors.StripeSignatureVerificationError) {
      return;
    }
    throw new Error(`${what}: expected StripeSignatureVerificationError, got ${e}`);
  }
  throw new Error(`${what} was accepted`);
}

function checkCase(c) {
  const receivedAt = c.timestamp * 1000;
  const verify = (body, header, secret, at) =>
    stripe.webhooks.constructEvent(body, header, secret, TOLERANCE, undefined, at);

  // As a string and as the raw Buffer a web framework hands over.
  for (const body of [c.body, Buffer.from(c.body, 'utf8')]) {
    const event = verify(body, c.header, c.secret, receivedAt);
    const expected = JSON.parse(c.body);
    if (JSON.stringify(event) !== JSON.stringify(expected)) {
      throw new Error('constructEvent returned a different event than the body');
    }
  }
  expectRejected('body with a newline appended', () => verify(c.body + '\n', c.header, c.secret, receivedAt));
  expectRejected('wrong secret', () => verify(c.body, c.header, c.secret + 'x', receivedAt));
  expectRejected('verified 301 s late', () => verify(c.body, c.header, c.secret, receivedAt + 301 * 1000));
}

function main() {
  const path = process.argv[2];
  if (!path) {
    console.error('usage: node node_verify.js CASES.json');
    process.exit(2);
  }
  const cases = JSON.parse(fs.readFileSync(path, 'utf8'));
  if (!Array.isArray(cases)) {
    throw new Error(`${path} does not hold a JSON array`);
  }
  let passed = 0;
  let failed = 0;
  cases.forEach((c, i) => {
    const label = `case ${i} (${c.name || 'unnamed'}; t=${c.timestamp}, ${Buffer.byteLength(c.body)} body bytes)`;
    try {
      checkCase(c);
      passed += 1;
      console.log(`ok   ${label}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${label}: ${e.message.split('\n')[0]}`);
    }
  });
  if (cases.length === 0) {
    console.log(`no cases in ${path}`);
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

main();

// Writes N signed webhook deliveries, one per line as "<Stripe-Signature>\t<body>", for wrk.
// Mostly distinct event ids, plus a share of duplicates of earlier ones.
// Usage: node gen.js <fixtures dir> <secret> <count> <duplicate share 0..1> > requests.tsv
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const [dir, secret, countArg, dupArg] = process.argv.slice(2);
const count = parseInt(countArg, 10);
const dupShare = parseFloat(dupArg);
const session = JSON.parse(fs.readFileSync(path.join(dir, 'checkout.session.json'), 'utf8'));
const t = Math.floor(Date.now() / 1000);
let seed = 12345;
const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };

// Streamed in chunks: hundreds of thousands of lines do not fit in one string.
let out = [];
const flush = () => { if (out.length) { fs.writeSync(1, out.join('\n') + '\n'); out = []; } };
let distinct = 0;
for (let i = 0; i < count; i++) {
  const dup = distinct > 0 && rand() < dupShare;
  const n = dup ? Math.floor(rand() * distinct) : distinct++;
  const body = JSON.stringify({
    id: `evt_load_${t}_${n}`, object: 'event', api_version: '2026-07-29.dahlia', created: t,
    data: { object: session }, livemode: false, pending_webhooks: 1,
    request: { id: null, idempotency_key: null }, type: 'checkout.session.completed',
  });
  const sig = crypto.createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
  out.push(`t=${t},v1=${sig}\t${body}`);
  if (out.length === 10000) flush();
}
flush();

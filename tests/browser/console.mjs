// The web console in a real browser: headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core, against the console example (examples/console.rs).
//
// Run with:
//   cargo build --example console --features axum,console,testing
//   (cd tests/browser && npm ci) && node tests/browser/console.mjs [path/to/console]
//
// It starts the example on a free port of 127.0.0.1 with a random password, then:
// checks that the console refuses a request without the password; opens the overview
// and waits for the demo's two failing events to be dead; checks the stylesheet applies
// under the Content-Security-Policy and that the page holds no script; saves a
// screenshot (CONSOLE_SCREENSHOT, default docs/console.png); checks that a POST without
// the CSRF token is refused; makes the demo handler succeed (POST /demo/fix); clicks
// "Requeue" on one dead event and sees it complete; clicks "Requeue all dead" and sees
// the last one complete; posts 200 signed events to its webhook route and pages through
// the completed jobs. Any failure, console error or CSP violation exits non-zero.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = process.argv[2] ?? process.env.CONSOLE_BIN ?? path.join(root, 'target/debug/examples/console');
const screenshot = path.resolve(process.env.CONSOLE_SCREENSHOT ?? path.join(root, 'docs/console.png'));
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const password = randomBytes(18).toString('base64url');
const dead1 = 'evt_1Qdemo_fail_PaymentFailed';
const dead2 = 'evt_1Qdemo_fail_Subscription';
// The webhook secret the example is started with (its own default, for local use).
const devSecret = 'whsec_local_development_only';

let server;
let serverLog = '';
let userDataDir;
let context;

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) fail(message);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, fn, timeoutMs = 15000, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  fail(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

async function main() {
  check(fs.existsSync(bin), `no console example at ${bin}: build it with ` +
    '`cargo build --example console --features axum,console,testing`');
  check(fs.existsSync(chromiumPath), `no Chromium at ${chromiumPath}: apt-get install chromium`);

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const consoleUrl = `${base}/admin/webhooks`;
  server = spawn(bin, [], {
    env: {
      ...process.env, PORT: String(port), CONSOLE_PASSWORD: password, STRIPE_WEBHOOK_SECRET: devSecret,
      RUST_LOG: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.on('data', (d) => { serverLog += d; });
  server.stderr.on('data', (d) => { serverLog += d; });
  server.on('exit', (code, signal) => { serverLog += `\n[server exited: ${code ?? signal}]\n`; });
  await until('the example to listen', async () => (await fetch(`${base}/healthz`)).ok, 30000);

  // Without the password: 401, a browser challenge, and nothing of the queue.
  const anonymous = await fetch(consoleUrl);
  const anonymousBody = await anonymous.text();
  check(anonymous.status === 401, `anonymous GET answered ${anonymous.status}`);
  check(/^Basic realm=/.test(anonymous.headers.get('www-authenticate') ?? ''), 'no basic-auth challenge');
  check(!anonymousBody.includes('evt_'), 'an anonymous answer shows events');

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    httpCredentials: { username: 'admin', password },
    viewport: { width: 1280, height: 900 },
    deviceScaleFactor: 1,
  });
  const page = context.pages()[0] ?? await context.newPage();
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || /Content.Security.Policy/i.test(msg.text())) {
      problems.push(`console ${msg.type()}: ${msg.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  const response = await page.goto(consoleUrl);
  check(response.status() === 200, `the overview answered ${response.status()}`);
  const headers = response.headers();
  check((headers['content-security-policy'] ?? '').includes("default-src 'none'"), 'no CSP');
  check(headers['x-frame-options'] === 'DENY', 'no X-Frame-Options: DENY');
  check(headers['cache-control'] === 'no-store', 'no Cache-Control: no-store');

  // The demo's failing events die after three fast attempts.
  await until('two dead events on the overview', async () => {
    await page.reload();
    return (await page.locator('.card.dead .n').innerText()).trim() === '2'
      && (await page.locator('.card.completed .n').innerText()).trim() === '4';
  });
  check(await page.locator('script').count() === 0, 'the page holds a script');
  const deadBadge = await page.locator('.badge.dead').first().evaluate(
    (e) => getComputedStyle(e).backgroundColor,
  );
  check(deadBadge !== 'rgba(0, 0, 0, 0)', 'the stylesheet did not apply (CSP?)');
  for (const id of [dead1, dead2]) {
    check(await page.locator(`tr.dead a:text-is("${id}")`).count() >= 1, `${id} is not listed as dead`);
  }
  check(await page.getByText('billing service answered 502').count() >= 1, 'no last error shown');

  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${path.relative(process.cwd(), screenshot)}`);

  // A POST without the token, or with a wrong one, is refused and changes nothing.
  for (const form of [{ key: dead1 }, { key: dead1, csrf: 'f'.repeat(64) }]) {
    const r = await page.request.post(`${consoleUrl}/requeue`, { form, maxRedirects: 0 });
    check(r.status() === 403, `a requeue without a good CSRF token answered ${r.status()}`);
  }

  // The dead state's page (from the navigation bar) lists both; one event's page: its
  // record, its error and its raw JSON, pretty-printed.
  await Promise.all([
    page.waitForURL('**/admin/webhooks/state/dead'),
    page.locator('header nav a:text-is("Dead")').click(),
  ]);
  for (const id of [dead1, dead2]) {
    check(await page.locator(`tr.dead a:text-is("${id}")`).count() === 1, `${id} is not listed as dead`);
  }
  await page.locator(`tr.dead a:text-is("${dead1}")`).first().click();
  await page.waitForURL(`**/admin/webhooks/jobs/${dead1}`);
  check((await page.locator('h1 .badge').innerText()).trim() === 'dead', 'the job page does not say dead');
  const json = await page.locator('pre.json').innerText();
  check(json.includes(`\n  "id": "${dead1}",`), 'the raw JSON is not pretty-printed');
  check((await page.locator('pre.error-box').innerText()).includes('502'), 'no last error on the job page');

  // Fix the handler, requeue the event from its page, and see it complete.
  const fixed = await page.request.post(`${base}/demo/fix`, { headers: { 'X-Demo-Fix': '1' } });
  check(fixed.status() === 200, `POST /demo/fix answered ${fixed.status()}`);
  await Promise.all([
    page.waitForURL(`**/admin/webhooks/jobs/${dead1}?notice=requeued`),
    page.getByRole('button', { name: 'Requeue' }).click(),
  ]);
  check((await page.locator('.notice').innerText()).includes('Requeued'), 'no notice after requeueing');
  await until(`${dead1} to complete`, async () => {
    await page.reload();
    return (await page.locator('h1 .badge').innerText()).trim() === 'completed';
  });

  // Back on the overview, requeue the other dead event with "Requeue all dead".
  await page.goto(consoleUrl);
  await Promise.all([
    page.waitForURL('**/admin/webhooks?notice=requeued_dead&n=1'),
    page.getByRole('button', { name: 'Requeue all 1 dead' }).click(),
  ]);
  check((await page.locator('.notice').innerText()).includes('Requeued 1 dead job.'), 'no notice after requeue all');
  await until('every event but the retrying one to complete', async () => {
    await page.reload();
    return (await page.locator('.card.dead .n').innerText()).trim() === '0'
      && (await page.locator('.card.completed .n').innerText()).trim() === '6';
  });

  // 200 more events, signed as Stripe signs them, through the example's webhook route:
  // 206 completed jobs make two pages of a state (200 a page by default).
  for (let i = 0; i < 200; i += 1) {
    const t = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({
      id: `evt_1Qpage_${String(i).padStart(3, '0')}`, object: 'event', api_version: '2026-10-28.endive',
      created: t, livemode: false, pending_webhooks: 1, request: null, type: 'customer.created',
      data: { object: { id: `cus_page_${i}`, object: 'customer' } },
    });
    const v1 = createHmac('sha256', devSecret).update(`${t}.${body}`).digest('hex');
    const r = await page.request.post(`${base}/webhook`, {
      data: body, headers: { 'Content-Type': 'application/json', 'Stripe-Signature': `t=${t},v1=${v1}` },
    });
    check(r.status() === 200, `a signed delivery answered ${r.status()}: ${await r.text()}`);
  }
  await until('the 200 events to complete', async () => {
    await page.reload();
    return (await page.locator('.card.completed .n').innerText()).trim() === '206';
  });
  // "Next page" leads to the last six, and "First page" back.
  await page.goto(`${consoleUrl}/state/completed`);
  const keys = async () => page.locator('tbody tr td:first-child a.mono').allInnerTexts();
  const first = await keys();
  check(first.length === 200, `the first page of completed jobs holds ${first.length}`);
  check(await page.getByRole('link', { name: 'First page' }).count() === 0, 'a first-page link on the first page');
  await Promise.all([
    page.waitForURL('**/admin/webhooks/state/completed?after=*'),
    page.getByRole('link', { name: 'Next page' }).click(),
  ]);
  const second = await keys();
  check(second.length === 6, `the second page of completed jobs holds ${second.length}`);
  check(new Set([...first, ...second]).size === 206, 'the pages repeat a job');
  check(await page.getByRole('link', { name: 'Next page' }).count() === 0, 'a next-page link on the last page');
  await Promise.all([
    page.waitForURL('**/admin/webhooks/state/completed'),
    page.getByRole('link', { name: 'First page' }).click(),
  ]);
  check(JSON.stringify(await keys()) === JSON.stringify(first), 'the first page changed');

  check(problems.length === 0, `the browser reported:\n  ${problems.join('\n  ')}`);
  console.log('console browser test: passed');
}

let failed = false;
const guard = setTimeout(() => {
  console.error('console browser test: timed out after 120 s');
  process.exit(1);
}, 120000);
try {
  await main();
} catch (e) {
  failed = true;
  console.error(`console browser test: FAILED: ${e.stack ?? e}`);
  if (serverLog) console.error(`--- the example's output ---\n${serverLog}`);
} finally {
  clearTimeout(guard);
  await context?.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  server?.kill('SIGINT');
}
process.exit(failed ? 1 : 0);

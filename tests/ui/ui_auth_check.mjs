// ui_auth_check.mjs: the web UI with DASHBOARD_AUTH=token, in Debian's headless Chromium
// (playwright-core), for tests/e2e/test_ui.py.
//
//   IOTD_DASHBOARD_URL=... IOTD_INGEST_URL=... UI_DEVICE=ui-dev-1 UI_READ_TOKEN=iotd_... \
//   UI_ARTIFACTS_DIR=build/test-logs/ui node ui_auth_check.mjs
//
// Opens the devices page without a token: the page must ask for one; enters UI_READ_TOKEN; the
// device must be listed; opens its page and ingests a reading (INGEST_AUTH is off in that test),
// which must reach the charts over GET /stream (read with fetch and the token). Prints one JSON
// line {"checks", "errors", "token_in_urls", "failed"?}; exit 1 when a step failed.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const dash = process.env.IOTD_DASHBOARD_URL;
const ingest = process.env.IOTD_INGEST_URL;
const device = process.env.UI_DEVICE;
const token = process.env.UI_READ_TOKEN;
const out = process.env.UI_ARTIFACTS_DIR || 'ui-artifacts';
const WAIT_MS = Number(process.env.UI_WAIT_MS || 15000);
if (!dash || !ingest || !device || !token) {
  console.error('set IOTD_DASHBOARD_URL, IOTD_INGEST_URL, UI_DEVICE and UI_READ_TOKEN');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const result = { checks: {}, errors: [], token_in_urls: [] };
const check = (name, value) => { result.checks[name] = value; };

async function until(what, fn) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--disable-background-networking'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
page.setDefaultTimeout(WAIT_MS);
page.on('pageerror', (e) => result.errors.push(`pageerror: ${e.message}`));
const withToken = new Set();  // paths of requests that carried the token
page.on('request', (r) => {
  if (r.url().includes(token)) result.token_in_urls.push(r.url());
  if (r.headers().authorization === `Bearer ${token}`) withToken.add(new URL(r.url()).pathname);
});

let step = 'prompt';
try {
  await page.goto(`${dash}/ui#/devices`);
  await page.locator('[data-testid="token-prompt"]').waitFor();
  check('asked_for_token', true);
  await page.screenshot({ path: join(out, 'token-prompt.png') });
  await page.fill('[data-testid="token-input"]', token);
  await page.click('[data-testid="token-submit"]');

  step = 'devices';
  const devRow = page.locator(`[data-testid="device-row"][data-device-id="${device}"]`);
  await devRow.waitFor();
  check('device_listed', true);
  check('prompt_gone', await page.locator('[data-testid="token-prompt"]').count() === 0);
  check('token_in_session_storage',
    await page.evaluate(() => Object.values(sessionStorage).length === 1));

  step = 'live readings';
  await devRow.locator('a').first().click();
  await page.locator('[data-testid="chart"] canvas').first().waitFor();
  await page.locator('[data-testid="live-status"][data-state="live"]').waitFor();
  const points = () => page.$$eval('[data-testid="chart"]', (cs) => cs.map((c) => Number(c.dataset.points)));
  const before = await until('the charts', async () => { const p = await points(); return p.length && p; });
  const r = await fetch(`${ingest}/ingest`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ device_id: device, temperature_c: 26, humidity: 45 }),
  });
  if (r.status !== 202) throw new Error(`ingest: HTTP ${r.status}`);
  check('live_points', await until('the live reading on the charts', async () => {
    const now = await points();
    return now.every((n, i) => n === before[i] + 1) && { before, after: now };
  }));
  check('stream_with_token', withToken.has('/stream'));
  await page.screenshot({ path: join(out, 'device-with-token.png') });
} catch (err) {
  result.failed = `${step}: ${err.message}`;
  try { await page.screenshot({ path: join(out, 'auth-failure.png') }); } catch { /* gone */ }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.failed ? 1 : 0);

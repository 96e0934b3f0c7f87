// ui_check.mjs: drives the web UI (/ui) of a running iotd in Debian's headless Chromium with
// playwright-core (tests/ui/package-lock.json), for tests/e2e/test_ui.py.
//
//   IOTD_DASHBOARD_URL=http://127.0.0.1:8002 IOTD_INGEST_URL=http://127.0.0.1:8001 \
//   UI_DEVICE=ui-dev-1 UI_STALE_DEVICE=ui-old UI_ARTIFACTS_DIR=build/test-logs/ui node ui_check.mjs
//
// UI_DEVICE must have readings of the last hour and no active alert yet; UI_STALE_DEVICE
// (optional) one whose last reading is older than the server's stale time. The script ingests
// two readings of UI_DEVICE itself: one while its page is open, then a hot one while the alerts
// page is. It prints one JSON line: {"checks": {name: value}, "screenshots": [...], "errors":
// [...], "foreign_requests": [...]}, and exits 1 when a step failed (the JSON then has "failed":
// "<step>: <error>"; a screenshot of that moment is failure.png). Every wait has a deadline;
// nothing sleeps.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const dash = process.env.IOTD_DASHBOARD_URL;
const ingest = process.env.IOTD_INGEST_URL;
const device = process.env.UI_DEVICE;
const staleDevice = process.env.UI_STALE_DEVICE || '';
const out = process.env.UI_ARTIFACTS_DIR || 'ui-artifacts';
const WAIT_MS = Number(process.env.UI_WAIT_MS || 15000);
if (!dash || !ingest || !device) {
  console.error('set IOTD_DASHBOARD_URL, IOTD_INGEST_URL and UI_DEVICE');
  process.exit(2);
}
mkdirSync(out, { recursive: true });

const result = { checks: {}, screenshots: [], errors: [], foreign_requests: [] };
const check = (name, value) => { result.checks[name] = value; };

async function getJson(path) {
  const r = await fetch(dash + path);
  if (!r.ok) throw new Error(`GET ${path}: HTTP ${r.status}`);
  return r.json();
}

async function postReading(reading) {
  const r = await fetch(`${ingest}/ingest`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(reading),
  });
  if (r.status !== 202) throw new Error(`ingest of ${JSON.stringify(reading)}: HTTP ${r.status}`);
}

// until polls fn (async) until it returns a truthy value; throws after WAIT_MS.
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
page.on('console', (m) => { if (m.type() === 'error') result.errors.push(`console: ${m.text()}`); });
const requests = [];  // every request the page made: [ms, method, url]
page.on('request', (r) => {
  const url = r.url();
  requests.push([Date.now(), r.method(), url]);
  if (!url.startsWith(`${dash}/`) && !url.startsWith('data:')) result.foreign_requests.push(url);
});

async function shot(name) {
  const path = join(out, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
}

const row = (testid, id) => `[data-testid="${testid}"][data-device-id="${id}"]`;

// seriesPixels counts, per chart, the canvas pixels in the colour of the chart's first series:
// axes and grid alone draw none of them, so a count > 0 means the data was drawn.
function seriesPixels() {
  return page.$$eval('[data-testid="chart"]', (charts) => charts.map((chart) => {
    const hex = chart.dataset.seriesColor;
    const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    let n = 0;
    for (const canvas of chart.querySelectorAll('canvas')) {
      const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
      for (let i = 0; i < data.length; i += 4) {
        const d = Math.abs(data[i] - want[0]) + Math.abs(data[i + 1] - want[1]) + Math.abs(data[i + 2] - want[2]);
        if (data[i + 3] > 200 && d < 60) n++;
      }
    }
    return { sensor: chart.dataset.sensor, points: Number(chart.dataset.points), pixels: n };
  }));
}

let step = 'start';
try {
  // 1. Devices: the ingested device is listed with its latest values; the filter narrows the
  //    list; a device silent for too long is marked stale.
  step = 'devices';
  await page.goto(`${dash}/ui#/devices`);
  const devRow = page.locator(row('device-row', device));
  await devRow.waitFor();
  check('device_listed', true);
  check('device_row_text', await devRow.innerText());
  if (staleDevice) {
    await page.locator(`${row('device-row', staleDevice)} [data-testid="stale-marker"]`).waitFor();
    check('stale_marked', true);
    check('fresh_device_marked_stale', await devRow.locator('[data-testid="stale-marker"]').count() > 0);
  }
  await shot('devices');
  await page.fill('[data-testid="device-filter"]', device);
  await until('the filter to apply', async () =>
    (await page.locator('[data-testid="device-row"]').count()) === 1);
  check('filter_rows', await page.locator('[data-testid="device-row"]').count());
  await page.fill('[data-testid="device-filter"]', '');

  // 2. Device page: one chart per sensor, drawn (series-coloured pixels on its canvas), for raw
  //    readings (1h) and for aggregates with the min/max band (24h).
  step = 'device page';
  await devRow.locator('a').first().click();
  await page.waitForFunction(() => location.hash.startsWith('#/devices/'));
  await page.locator('[data-testid="charts"][data-range="1h"] [data-testid="chart"] canvas').first().waitFor();
  const raw = await until('the raw charts to draw', async () => {
    const p = await seriesPixels();
    return p.length >= 2 && p.every((c) => c.pixels > 50) && p;
  });
  check('raw_charts', raw);
  await shot('device');
  // A reading ingested now is appended to the open charts over /stream.
  const points = () => page.$$eval('[data-testid="chart"]', (cs) => cs.map((c) => Number(c.dataset.points)));
  const before = await points();
  await postReading({ device_id: device, temperature_c: 25, humidity: 50 });
  check('live_points', await until('the live reading on the charts', async () => {
    const now = await points();
    return now.every((n, i) => n === before[i] + 1) && { before, after: now };
  }));
  await page.click('[data-testid="range-24h"]');
  await page.locator('[data-testid="charts"][data-range="24h"] [data-testid="chart"] canvas').first().waitFor();
  const aggregated = await until('the aggregate charts to draw', async () => {
    const p = await seriesPixels();
    return p.length >= 2 && p.every((c) => c.pixels > 20) && p;
  });
  check('aggregate_charts', aggregated);
  await shot('device-24h');
  await page.click('[data-testid="range-1h"]');

  // 3. Alerts: a hot reading ingested while the page is open shows up as an active alert without
  //    a reload, and without the page asking /alerts again (it came over /stream).
  step = 'alerts live';
  await page.click('[data-testid="nav-alerts"]');
  await page.locator('[data-testid="alerts-table"]').waitFor();
  await page.locator('[data-testid="live-status"][data-state="live"]').waitFor();
  await page.waitForFunction(() => document.getElementById('view').dataset.ready === 'true');
  check('active_alerts_before', await page.locator(`${row('alert-row', device)}[data-status="active"]`).count());
  await page.evaluate(() => { window.__sameDocument = true; });
  const ingestedAt = Date.now();
  await postReading({ device_id: device, temperature_c: 80, humidity: 40 });
  const alertRow = page.locator(`${row('alert-row', device)}[data-status="active"]`);
  await alertRow.first().waitFor();
  check('alert_seconds', (Date.now() - ingestedAt) / 1000);
  check('alert_live_without_reload', await page.evaluate(() => window.__sameDocument === true));
  check('alert_refetches', requests.filter(([t, m, u]) => t >= ingestedAt && m === 'GET' &&
    new URL(u).pathname === '/alerts').length);
  check('alert_row_text', await alertRow.first().innerText());

  // 4. Acknowledge: the row shows it, and so does the API.
  step = 'acknowledge';
  const alertId = await alertRow.first().getAttribute('data-alert-id');
  await alertRow.first().locator('[data-testid="alert-ack"]').click();
  await page.locator(`[data-testid="alert-row"][data-alert-id="${alertId}"][data-acknowledged="true"] [data-testid="alert-acked"]`).waitFor();
  check('acknowledged_in_ui', true);
  check('acknowledged_alert_id', alertId);
  const listed = (await getJson(`/alerts?device_id=${encodeURIComponent(device)}`)).find((a) => a.id === alertId);
  check('acknowledged_in_api', listed?.acknowledged === true);
  await shot('alerts');

  // 5. Overview: the numbers are those of /stats.
  step = 'overview';
  await page.click('[data-testid="nav-overview"]');
  const matched = await until('the overview to show /stats', async () => {
    const stats = await getJson('/stats');
    const shown = await page.$$eval('[data-testid^="overview-"][data-value]', (els) =>
      Object.fromEntries(els.map((e) => [e.dataset.testid, Number(e.dataset.value)])));
    const total = await page.locator('[data-testid="overview-devices-total"]').textContent().catch(() => '');
    const ok = shown['overview-total-telemetry'] === stats.total_telemetry &&
      shown['overview-active-alerts'] === stats.active_alerts &&
      Number(String(total).replace(/,/g, '')) === stats.total_devices;
    return ok && { stats, shown, devices_total: Number(String(total).replace(/,/g, '')) };
  });
  check('overview', matched);
  await shot('overview');
} catch (err) {
  result.failed = `${step}: ${err.message}`;
  // What the server had at that moment, and whether the page's stream was up.
  result.at_failure = {
    alerts: await getJson(`/alerts?device_id=${encodeURIComponent(device)}`).catch((e) => String(e)),
    live: await page.getAttribute('[data-testid="live-status"]', 'data-state', { timeout: 1000 }).catch(() => null),
  };
  try { await shot('failure'); } catch { /* the browser may be gone */ }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.failed ? 1 : 0);

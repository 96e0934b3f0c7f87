// app.js: the iotd web UI. Plain DOM code, no framework and no build step.
//
// The view comes from the URL's hash: #/ (overview), #/devices, #/devices/{id}, #/alerts. Each
// view reads the dashboard's JSON API (same origin) and stays live with one stream on
// GET /stream ("reading" and "alert" events), read with fetch() so that it can carry the read
// token (EventSource cannot send headers); it reconnects by itself. With DASHBOARD_AUTH=token
// the API answers 401: the page asks for a read token once, keeps it in sessionStorage (this tab
// only, gone when it closes) and sends it as `Authorization: Bearer`; never in a URL. Charts are uPlot
// (window.uPlot, from /ui/uPlot.iife.min.js). Elements tests look for carry data-testid.
//
// Everything shown that comes from devices (ids, messages) is inserted as text, never as HTML.

const view = document.getElementById('view');
const liveBadge = document.getElementById('live');

const COLORS = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#db2777'];
// Numeric fields of a reading that are not sensors.
const NOT_SENSORS = new Set(['lat', 'lon']);
// Chart ranges: raw readings up to an hour, window aggregates (with a min/max band) beyond.
const RANGES = [
  { name: '15m', seconds: 15 * 60 },
  { name: '1h', seconds: 3600 },
  { name: '6h', seconds: 6 * 3600, window: '1m' },
  { name: '24h', seconds: 24 * 3600, window: '1m' },
  { name: '7d', seconds: 7 * 86400, window: '1h' },
];
const WINDOW_SECONDS = { '1m': 60, '1h': 3600 };
// The most rows the device list draws at once (the filter finds the others).
const MAX_ROWS = 500;

const app = {
  config: { stale_after_s: 300 },
  listeners: new Set(),  // fn(type, data) of the current view, called for each stream event
  stream: null,  // { close() } of the current stream
  streamUrl: '',
  range: '1h',
  deviceFilter: '',
  current: null,  // the current view's context
};

// --- helpers --------------------------------------------------------------------------------

// h creates an element: h('a', {href: '#/'}, 'text', child). Attributes named on* are listeners;
// null, undefined and false attributes and children are left out.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// --- the read token (DASHBOARD_AUTH=token, docs/security.md) ---------------------------------

const TOKEN_KEY = 'iotd-read-token';
let tokenPrompt = null;  // the open prompt's promise: concurrent 401s share it

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// askForToken shows a form that asks for a read token; resolves when one was entered.
function askForToken(message) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'iotd_…', 'data-testid': 'token-input', 'aria-label': 'read token' });
    const form = h('form', { class: 'token-form' },
      h('h2', {}, 'Read token needed'),
      h('p', {}, message),
      h('p', { class: 'hint' }, 'Create one with ', h('code', {}, 'iotd token create --read'),
        '. It is kept in this tab only.'),
      input,
      h('button', { type: 'submit', 'data-testid': 'token-submit' }, 'Open the dashboard'));
    const overlay = h('div', { class: 'token-overlay', 'data-testid': 'token-prompt' }, form);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      overlay.remove();
      tokenPrompt = null;
      resolve();
    });
    document.body.append(overlay);
    input.focus();
  });
  return tokenPrompt;
}

// authFetch is fetch with the read token; on 401 it asks for a (new) token and tries again.
async function authFetch(path, init = {}) {
  for (;;) {
    const r = await fetch(path, { ...init, headers: { ...init.headers, ...authHeaders() } });
    if (r.status !== 401) return r;
    const had = sessionStorage.getItem(TOKEN_KEY);
    sessionStorage.removeItem(TOKEN_KEY);
    await askForToken(had ? 'The token was not accepted (revoked or mistyped). Enter a read token.'
      : 'This dashboard needs a read token.');
  }
}

async function api(path, init = {}) {
  const r = await authFetch(path, { ...init, headers: { Accept: 'application/json', ...init.headers } });
  if (!r.ok) {
    const err = new Error(`${init.method || 'GET'} ${path}: HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

// apiAll fetches a list and its following pages (Link: <...>; rel="next"), at most maxPages.
async function apiAll(path, maxPages = 10) {
  let out = [];
  for (let page = 0; path && page < maxPages; page++) {
    const r = await authFetch(path, { headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(`GET ${path}: HTTP ${r.status}`);
    out = out.concat(await r.json());
    const m = /<([^>]+)>\s*;\s*rel="next"/.exec(r.headers.get('Link') || '');
    path = m ? m[1] : null;
  }
  return out;
}

// parseTs returns the milliseconds of an ISO 8601 time (the API sends microseconds).
function parseTs(s) {
  return s ? Date.parse(String(s).replace(/(\.\d{3})\d+/, '$1')) : NaN;
}

function relTime(ts) {
  const ms = parseTs(ts);
  if (Number.isNaN(ms)) return '–';
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return 'in the future';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

const numberFormat = new Intl.NumberFormat('en', { maximumFractionDigits: 2 });
function fmt(v) {
  return typeof v === 'number' ? numberFormat.format(v) : (v ?? '–');
}

// sensors lists the [name, value] pairs of a reading's sensors.
function sensors(reading) {
  if (!reading) return [];
  return Object.entries(reading).filter(([k, v]) => typeof v === 'number' && !NOT_SENSORS.has(k));
}

function isStale(device) {
  const ms = parseTs(device.last_seen);
  return Number.isNaN(ms) || Date.now() - ms > app.config.stale_after_s * 1000;
}

// throttle returns fn wrapped so that bursts of calls run it once, `ms` after the first.
function throttle(fn, ms) {
  let timer = null;
  return (...args) => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
}

function badge(text, kind, attrs = {}) {
  return h('span', { class: `badge ${kind}`, ...attrs }, text);
}

function errorBox(err) {
  return h('p', { class: 'error', 'data-testid': 'error' }, String(err.message || err));
}

function deviceLink(id) {
  return h('a', { href: `#/devices/${encodeURIComponent(id)}` }, id);
}

function valuesList(reading) {
  return h('span', { class: 'values' },
    sensors(reading).map(([k, v]) => h('span', { class: 'value' }, h('b', {}, k), ' ', fmt(v))));
}

// --- the event stream -------------------------------------------------------------------------

function setLive(state) {
  liveBadge.dataset.state = state;
  liveBadge.textContent = state;
}

// dispatchSse hands one Server-Sent Event's block ("event: x\ndata: {...}") to the views.
function dispatchSse(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) type = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (!data.length || (type !== 'reading' && type !== 'alert')) return;
  let parsed;
  try { parsed = JSON.parse(data.join('\n')); } catch { return; }
  for (const fn of app.listeners) fn(type, parsed);
}

// useStream points the page's one stream at `url` (reopening it only when it changes). It is
// read with fetch() and a stream reader, so it carries the read token; when it ends it is opened
// again after 2 s (5 s after an HTTP error), and the views reload what the gap may have missed.
function useStream(url) {
  if (app.streamUrl === url && app.stream) return;
  app.stream?.close();
  app.streamUrl = url;
  const abort = new AbortController();
  const stream = { close: () => abort.abort() };
  app.stream = stream;
  let opened = false;
  const run = async () => {
    while (!abort.signal.aborted && app.stream === stream) {
      setLive(opened ? 'reconnecting' : 'connecting');
      let delay = 2000;
      try {
        const r = await authFetch(url, { headers: { Accept: 'text/event-stream' },
          signal: abort.signal, cache: 'no-store' });
        if (!r.ok || !r.body) throw new Error(`GET ${url}: HTTP ${r.status}`);
        setLive('live');
        // After a reconnect, events of the gap are lost: views reload on a 'reconnect' event.
        if (opened) for (const fn of app.listeners) fn('reconnect', null);
        opened = true;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            dispatchSse(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        setLive('offline');
        delay = 5000;
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  };
  run();
}

// --- views --------------------------------------------------------------------------------------

// Context is what a view registers while it is shown; dispose() undoes all of it.
class Context {
  constructor() { this.alive = true; this.undo = []; }
  on(fn) { app.listeners.add(fn); this.undo.push(() => app.listeners.delete(fn)); }
  every(ms, fn) { const t = setInterval(fn, ms); this.undo.push(() => clearInterval(t)); }
  cleanup(fn) { this.undo.push(fn); }
  dispose() { this.alive = false; for (const fn of this.undo) fn(); }
}

function card(label, value, testid, extra) {
  return h('div', { class: 'card' },
    h('div', { class: 'card-label' }, label),
    h('div', { class: 'card-value', 'data-testid': testid, 'data-value': value }, fmt(value)),
    extra ? h('div', { class: 'card-extra' }, extra) : null);
}

async function overviewView(ctx) {
  const cards = h('div', { class: 'cards', 'data-testid': 'overview-cards' }, 'Loading…');
  const latest = h('div');
  view.append(h('h1', {}, 'Overview'), cards,
    h('h2', {}, 'Active alerts ', h('a', { href: '#/alerts', class: 'more' }, 'all alerts →')), latest);
  const table = alertTable({ showDevice: true, limit: 8 });
  latest.append(table.el);

  const refresh = async () => {
    try {
      const [stats, devices, active, dlq] = await Promise.all([
        api('/stats'), apiAll('/devices?limit=1000', 20), apiAll('/alerts?status=active&limit=1000', 5),
        api('/dlq?limit=1000')]);
      if (!ctx.alive) return;
      const online = devices.filter((d) => !isStale(d)).length;
      const bySeverity = {};
      for (const a of active) bySeverity[a.severity] = (bySeverity[a.severity] || 0) + 1;
      const severities = Object.keys(bySeverity).sort();
      cards.replaceChildren(
        card('Ingest rate', stats.ingest_rate_per_s, 'overview-ingest-rate', 'readings per second'),
        card('Devices online', online, 'overview-devices-online',
          h('span', {}, 'of ', h('b', { 'data-testid': 'overview-devices-total' }, fmt(stats.total_devices)),
            ` (silent < ${app.config.stale_after_s} s)`)),
        card('Active alerts', stats.active_alerts, 'overview-active-alerts',
          severities.length ? severities.map((s) => badge(`${s} ${bySeverity[s]}`, s,
            { 'data-testid': `overview-severity-${s}` })) : 'none'),
        card('Dead letters', dlq.length, 'overview-dead-letters',
          dlq.length >= 1000 ? 'the newest 1000 counted' : h('a', { href: '/dlq' }, 'list')),
        card('Readings stored', stats.total_telemetry, 'overview-total-telemetry'),
        card('Aggregates stored', stats.total_aggregated, 'overview-total-aggregated'),
      );
      cards.dataset.updated = stats.timestamp;
      table.set(active);
    } catch (err) {
      if (ctx.alive) cards.replaceChildren(errorBox(err));
    }
  };
  // Readings change the numbers all the time: every 5 s is enough. Alerts show at once.
  ctx.every(5000, refresh);
  const soon = throttle(refresh, 500);
  ctx.on((type) => { if (type !== 'reading') soon(); });
  await refresh();
}

async function devicesView(ctx) {
  const filter = h('input', {
    type: 'search', placeholder: 'Filter by device id', 'data-testid': 'device-filter',
    value: app.deviceFilter, oninput: () => { app.deviceFilter = filter.value; render(); },
  });
  const count = h('span', { class: 'muted', 'data-testid': 'device-count' });
  const body = h('tbody');
  view.append(
    h('h1', {}, 'Devices'),
    h('div', { class: 'toolbar' }, filter, count),
    h('table', { class: 'list', 'data-testid': 'devices-table' },
      h('thead', {}, h('tr', {}, ['Device', 'Status', 'Last seen', 'Readings', 'Latest values',
        'Active alerts'].map((t) => h('th', {}, t)))),
      body));

  let devices = [];
  let activeByDevice = new Map();

  function render() {
    const q = filter.value.trim().toLowerCase();
    const matching = devices.filter((d) => d.device_id.toLowerCase().includes(q));
    const shown = matching.slice(0, MAX_ROWS);
    count.textContent = `${matching.length} of ${devices.length}` +
      (shown.length < matching.length ? ` (first ${MAX_ROWS} shown: refine the filter)` : '');
    body.replaceChildren(...shown.map((d) => {
      const stale = isStale(d);
      const alerts = activeByDevice.get(d.device_id) || 0;
      return h('tr', { 'data-testid': 'device-row', 'data-device-id': d.device_id, class: stale ? 'is-stale' : '' },
        h('td', {}, deviceLink(d.device_id)),
        h('td', {}, stale
          ? badge('stale', 'stale', { 'data-testid': 'stale-marker', title: `silent for more than ${app.config.stale_after_s} s` })
          : badge('online', 'online')),
        h('td', { title: d.last_seen, 'data-testid': 'device-last-seen' }, relTime(d.last_seen)),
        h('td', { class: 'num' }, fmt(d.readings)),
        h('td', {}, valuesList(d.latest)),
        h('td', { class: 'num' }, alerts
          ? badge(String(alerts), 'warning', { 'data-testid': 'device-active-alerts' }) : '0'));
    }));
    if (!shown.length) {
      body.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' },
        devices.length ? 'No device matches the filter.' : 'No devices yet.')));
    }
  }

  async function load() {
    try {
      const [list, active] = await Promise.all([
        apiAll('/devices?limit=1000', 20), apiAll('/alerts?status=active&limit=1000', 5)]);
      if (!ctx.alive) return;
      devices = list;
      activeByDevice = new Map();
      for (const a of active) activeByDevice.set(a.device_id, (activeByDevice.get(a.device_id) || 0) + 1);
      render();
    } catch (err) {
      if (ctx.alive) body.replaceChildren(h('tr', {}, h('td', { colspan: 6 }, errorBox(err))));
    }
  }

  const reload = throttle(load, 1000);
  const rerender = throttle(render, 500);
  ctx.on((type, data) => {
    if (type !== 'reading') { reload(); return; }
    const d = devices.find((x) => x.device_id === data.device_id);
    if (!d) { reload(); return; }
    if (!(parseTs(d.last_seen) > parseTs(data.ts))) d.last_seen = data.ts;
    d.latest = data;
    d.readings = (d.readings || 0) + 1;
    rerender();
  });
  ctx.every(5000, render);   // relative times and stale markers move on
  ctx.every(30000, load);
  await load();
}

// chartFor draws one sensor: [[x...], [y...]] for raw readings, or [[x...], [avg...],
// [min...], [max...]] for aggregates, with the band between min and max filled.
function chartFor(el, sensor, data, color, range, banded) {
  // Points are drawn by uPlot's default rule: only where they are far enough apart.
  const series = [{}, { label: banded ? `${sensor} (avg)` : sensor, stroke: color, width: 2 }];
  const opts = {
    width: Math.max(300, el.clientWidth || 600),
    height: 220,
    scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - range.seconds, now]; } } },
    series,
    legend: { show: true },
  };
  if (banded) {
    series.push({ label: 'min', stroke: `${color}66`, width: 1, points: { show: false } },
      { label: 'max', stroke: `${color}66`, width: 1, points: { show: false } });
    opts.bands = [{ series: [3, 2], fill: `${color}22` }];
  }
  return new window.uPlot(opts, data, el);
}

async function deviceView(ctx, id) {
  const enc = encodeURIComponent(id);
  const status = h('p', { class: 'muted', 'data-testid': 'device-status' }, 'Loading…');
  const buttons = h('div', { class: 'ranges', role: 'group' });
  const charts = h('div', { class: 'charts', 'data-testid': 'charts' });
  const alerts = alertTable({ showDevice: false, limit: 50 });
  view.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/devices' }, 'Devices'), ' / '),
    h('h1', { 'data-testid': 'device-title' }, id),
    status,
    h('div', { class: 'toolbar' }, h('span', { class: 'muted' }, 'Range'), buttons),
    charts,
    h('h2', {}, 'Alerts'),
    alerts.el);

  let device;
  try {
    device = await api(`/devices/${enc}`);
  } catch (err) {
    status.replaceChildren(err.status === 404 ? h('span', { 'data-testid': 'device-unknown' }, 'No such device.') : errorBox(err));
    return;
  }
  if (!ctx.alive) return;

  const showStatus = () => {
    const stale = isStale(device);
    status.replaceChildren(
      stale ? badge('stale', 'stale', { 'data-testid': 'stale-marker' }) : badge('online', 'online'),
      ` last seen ${relTime(device.last_seen)} · ${fmt(device.readings)} readings · latest `,
      valuesList(device.latest));
  };
  showStatus();
  ctx.every(5000, showStatus);

  // plots: sensor -> {u, data, sums?, counts?}; rebuilt when the range changes.
  let plots = new Map();
  let range = RANGES.find((r) => r.name === app.range) || RANGES[1];
  const destroy = () => { for (const p of plots.values()) p.u.destroy(); plots = new Map(); };
  ctx.cleanup(destroy);

  let generation = 0;  // of loadCharts calls: only the latest one draws
  async function loadCharts() {
    const gen = ++generation;
    for (const b of buttons.children) b.classList.toggle('active', b.dataset.range === range.name);
    const to = Date.now();
    const from = to - range.seconds * 1000;
    const q = `from=${new Date(from).toISOString()}&to=${new Date(to + 60000).toISOString()}&limit=1000`;
    let series;  // sensor -> data arrays
    try {
      if (!range.window) {
        const rows = (await apiAll(`/devices/${enc}/telemetry?${q}`, 10)).reverse();
        series = new Map();
        for (const row of rows) {
          for (const [k, v] of sensors(row)) {
            if (!series.has(k)) series.set(k, [[], []]);
            const d = series.get(k);
            d[0].push(parseTs(row.ts) / 1000);
            d[1].push(v);
          }
        }
      } else {
        const names = sensors(device.latest).map(([k]) => k);
        const lists = await Promise.all(names.map((s) =>
          apiAll(`/devices/${enc}/aggregates?window=${range.window}&sensor_type=${encodeURIComponent(s)}&${q}`, 5)));
        series = new Map(names.map((s, i) => {
          const rows = lists[i].reverse();
          return [s, [rows.map((a) => parseTs(a.timestamp) / 1000), rows.map((a) => a.average),
            rows.map((a) => a.min), rows.map((a) => a.max), rows.map((a) => a.sum), rows.map((a) => a.count)]];
        }));
      }
    } catch (err) {
      if (ctx.alive && gen === generation) charts.replaceChildren(errorBox(err));
      return;
    }
    if (!ctx.alive || gen !== generation) return;
    destroy();
    charts.replaceChildren();
    let i = 0;
    for (const [sensor, d] of [...series.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      const color = COLORS[i++ % COLORS.length];
      const box = h('div', { class: 'chart', 'data-testid': 'chart', 'data-sensor': sensor, 'data-series-color': color,
        'data-points': d[0].length });
      charts.append(h('section', { class: 'chart-card' }, h('h3', {}, sensor,
        h('span', { class: 'muted' }, range.window ? ` · ${range.window} windows, average with min–max band` : ' · raw readings')), box));
      const data = range.window ? d.slice(0, 4) : d;
      plots.set(sensor, { u: chartFor(box, sensor, data, color, range, !!range.window), data,
        sums: d[4], counts: d[5], box });
    }
    if (!series.size) charts.append(h('p', { class: 'muted', 'data-testid': 'no-data' }, `No readings in the last ${range.name}.`));
    charts.dataset.range = range.name;
  }

  for (const r of RANGES) {
    buttons.append(h('button', { type: 'button', 'data-range': r.name, 'data-testid': `range-${r.name}`,
      onclick: () => { range = r; app.range = r.name; loadCharts(); } }, r.name));
  }

  // A live reading is appended to its sensor's chart (raw), or folded into the last window
  // (aggregates) the way the aggregator does; a sensor not charted yet reloads the charts.
  const reloadCharts = throttle(loadCharts, 2000);
  const reloadAlerts = throttle(() => loadAlerts(), 1000);
  const loadAlerts = async () => {
    try { alerts.set(await api(`/alerts?device_id=${enc}&limit=50`)); } catch (err) { alerts.error(err); }
  };
  ctx.on((type, data) => {
    if (type === 'reconnect') { reloadCharts(); reloadAlerts(); return; }
    if (data.device_id !== id) return;
    if (type === 'alert') { alerts.upsert(data); return; }
    if (!(parseTs(device.last_seen) > parseTs(data.ts))) device.last_seen = data.ts;
    device.latest = data;
    device.readings = (device.readings || 0) + 1;
    showStatus();
    const x = parseTs(data.ts) / 1000;
    for (const [sensor, v] of sensors(data)) {
      const p = plots.get(sensor);
      if (!p) { reloadCharts(); continue; }
      const d = p.data;
      if (!range.window) {
        d[0].push(x); d[1].push(v);
      } else {
        const w = WINDOW_SECONDS[range.window];
        const start = Math.floor(x / w) * w;
        const last = d[0].length - 1;
        if (last >= 0 && d[0][last] === start) {
          p.sums[last] += v; p.counts[last] += 1;
          d[1][last] = p.sums[last] / p.counts[last];
          d[2][last] = Math.min(d[2][last], v); d[3][last] = Math.max(d[3][last], v);
        } else {
          d[0].push(start); d[1].push(v); d[2].push(v); d[3].push(v); p.sums.push(v); p.counts.push(1);
        }
      }
      p.box.dataset.points = d[0].length;
      p.u.setData(d);
    }
  });

  const onResize = throttle(() => { for (const p of plots.values()) p.u.setSize({ width: p.box.clientWidth, height: 220 }); }, 200);
  window.addEventListener('resize', onResize);
  ctx.cleanup(() => window.removeEventListener('resize', onResize));
  await Promise.all([loadCharts(), loadAlerts()]);
}

// alertTable is a table of alerts, newest first, kept by id so that live events update rows in
// place. `filter` (optional) decides which alerts are shown.
function alertTable({ showDevice, limit, filter = () => true }) {
  const body = h('tbody');
  const el = h('table', { class: 'list', 'data-testid': 'alerts-table' },
    h('thead', {}, h('tr', {}, ['Opened', showDevice ? 'Device' : null, 'Sensor', 'Value / threshold',
      'Severity', 'Status', 'Count', 'Message', 'Acknowledged'].filter((t) => t !== null).map((t) => h('th', {}, t)))),
    body);
  let alerts = new Map();
  let recent = new Map();  // alerts from events since the last set(): a list fetched meanwhile may predate them
  const fresh = new Map();  // id -> when a live event first brought it: highlighted for 3 s
  let shownFilter = filter;

  async function acknowledge(a, button) {
    button.disabled = true;
    try {
      const updated = await api(`/alerts/${encodeURIComponent(a.id)}/ack`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ by: 'web ui' }) });
      upsert(updated);
    } catch (err) {
      button.disabled = false;
      button.title = String(err.message);
      button.classList.add('failed');
    }
  }

  function row(a) {
    const acked = a.acknowledged === true;
    const ack = acked
      ? badge(a.acknowledged_by ? `acknowledged by ${a.acknowledged_by}` : 'acknowledged', 'acked',
        { 'data-testid': 'alert-acked', title: a.acknowledged_at || '' })
      : h('button', { type: 'button', 'data-testid': 'alert-ack', onclick: (ev) => acknowledge(a, ev.currentTarget) }, 'Acknowledge');
    return h('tr', {
      'data-testid': 'alert-row', 'data-alert-id': a.id, 'data-device-id': a.device_id,
      'data-status': a.status, 'data-severity': a.severity, 'data-acknowledged': String(acked),
      class: `${fresh.has(a.id) ? 'fresh' : ''} ${a.status === 'active' ? '' : 'is-done'}`,
      // A re-drawn row continues its highlight where it was instead of starting it again.
      style: fresh.has(a.id) ? `animation-delay: -${Date.now() - fresh.get(a.id)}ms` : null,
    },
    h('td', { title: a.created_at }, relTime(a.created_at)),
    showDevice ? h('td', {}, deviceLink(a.device_id)) : null,
    h('td', {}, a.sensor_type),
    h('td', { class: 'num' }, `${fmt(a.value)} / ${fmt(a.threshold)}`),
    h('td', {}, badge(a.severity, a.severity)),
    h('td', {}, badge(a.status, a.status, { 'data-testid': 'alert-status' })),
    h('td', { class: 'num' }, fmt(a.count)),
    h('td', { class: 'message' }, a.message),
    h('td', {}, ack));
  }

  function render() {
    const list = [...alerts.values()].filter(shownFilter)
      .sort((x, y) => parseTs(y.created_at) - parseTs(x.created_at)).slice(0, limit);
    body.replaceChildren(...list.map(row));
    if (!list.length) body.append(h('tr', {}, h('td', { colspan: 9, class: 'muted', 'data-testid': 'no-alerts' }, 'No alerts.')));
  }

  function upsert(a) {
    recent.set(a.id, a);
    if (!alerts.has(a.id)) {
      fresh.set(a.id, Date.now());
      setTimeout(() => { fresh.delete(a.id); }, 3000);
    }
    alerts.set(a.id, a);
    render();
  }

  render();
  return {
    el,
    upsert,
    set(list) {
      alerts = new Map(list.map((a) => [a.id, a]));
      for (const a of recent.values()) {
        const listed = alerts.get(a.id);
        if (!listed || parseTs(a.updated_at) >= parseTs(listed.updated_at)) alerts.set(a.id, a);
      }
      recent = new Map();
      render();
    },
    setFilter(fn) { shownFilter = fn; render(); },
    error(err) { body.replaceChildren(h('tr', {}, h('td', { colspan: 9 }, errorBox(err)))); },
  };
}

async function alertsView(ctx) {
  const select = (testid, options) => h('select', { 'data-testid': testid, onchange: () => apply(true) },
    options.map(([value, label]) => h('option', { value }, label)));
  const status = select('alert-filter-status', [['', 'any status'], ['active', 'active'], ['resolved', 'resolved']]);
  const severity = select('alert-filter-severity', [['', 'any severity'], ['info', 'info'], ['warning', 'warning'], ['critical', 'critical']]);
  const device = h('input', { type: 'search', placeholder: 'Device id contains', 'data-testid': 'alert-filter-device', oninput: () => apply(false) });
  const table = alertTable({ showDevice: true, limit: 200 });
  view.append(h('h1', {}, 'Alerts'), h('div', { class: 'toolbar' }, status, severity, device), table.el);

  let loadedStatus = null;
  async function load() {
    const s = status.value;
    try {
      const list = await apiAll(`/alerts?limit=200${s ? `&status=${s}` : ''}`, 1);
      if (!ctx.alive) return;
      loadedStatus = s;
      table.set(list);
    } catch (err) {
      if (ctx.alive) table.error(err);
    }
  }
  // apply filters the rows shown; a different status is fetched from the server (only the 200
  // newest are kept), severity and device text are filtered here.
  function apply(refetch) {
    const s = status.value;
    const sev = severity.value;
    const q = device.value.trim().toLowerCase();
    table.setFilter((a) => (!s || a.status === s) && (!sev || a.severity === sev) &&
      (!q || a.device_id.toLowerCase().includes(q)));
    if (refetch && s !== loadedStatus) load();
  }
  ctx.on((type, data) => {
    if (type === 'alert') table.upsert(data);
    else if (type === 'reconnect') load();
  });
  // The stream keeps the list current; polling is only the fallback while it is down.
  ctx.every(30000, () => { if (liveBadge.dataset.state !== 'live') load(); });
  apply(false);
  await load();
}

// --- routing ------------------------------------------------------------------------------------

function route() {
  app.current?.dispose();
  const ctx = new Context();
  app.current = ctx;
  view.replaceChildren();
  const parts = (location.hash.replace(/^#\/?/, '') || '').split('/').filter(Boolean);
  let name = 'overview';
  let render = () => overviewView(ctx);
  let stream = '/stream';
  if (parts[0] === 'devices' && parts.length === 2) {
    const id = decodeURIComponent(parts[1]);
    name = 'devices';
    render = () => deviceView(ctx, id);
    stream = `/stream?device_id=${encodeURIComponent(id)}`;
  } else if (parts[0] === 'devices') {
    name = 'devices';
    render = () => devicesView(ctx);
  } else if (parts[0] === 'alerts') {
    name = 'alerts';
    render = () => alertsView(ctx);
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === name);
  }
  document.body.dataset.view = name;
  useStream(stream);
  view.dataset.ready = 'false';
  render().catch((err) => view.append(errorBox(err))).finally(() => {
    if (ctx.alive) view.dataset.ready = 'true';
  });
}

async function start() {
  try {
    app.config = { ...app.config, ...(await api('/ui/config.json')) };
  } catch {
    // keep the default; the views still work
  }
  window.addEventListener('hashchange', route);
  route();
}

start();

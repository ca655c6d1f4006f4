// The cockpit in a real headless Chromium (Debian's `chromium`, driven by playwright-core)
// against the real kpilens server on loopback, over freshly generated demo data (scale 1).
//
//   KPILENS_BIN   the kpilens binary (default: $CARGO_TARGET_DIR or ~/.cache/kpilens-target, debug)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//
// Screenshots and the time-to-first-render figures go to tests/output/ (ignored by git).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { formatValue } from '../app/format.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'kpilens-target');
const bin = process.env.KPILENS_BIN ?? join(targetDir, 'debug', 'kpilens');
const output = join(repo, 'tests', 'output');
const shots = join(output, 'screenshots');

const DESKTOP = { width: 1440, height: 1000 };
const PHONE = { width: 375, height: 812 };

let server;
let base;
let browser;
let dataDir;

/** `kpilens demo` with these arguments on a free loopback port: the process and its base URL. */
async function spawnDemo(args) {
  const child = spawn(bin, ['demo', '--addr', '127.0.0.1:0', '--warm-up', 'false', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  const url = await new Promise((ok, fail) => {
    let seen = '';
    child.stdout.on('data', (chunk) => {
      seen += chunk;
      const m = seen.match(/on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) ok(m[1]);
    });
    child.on('exit', (code) => fail(new Error(`kpilens exited with ${code}: ${seen}`)));
    setTimeout(() => fail(new Error(`kpilens did not start: ${seen}`)), 60_000).unref();
  });
  return { child, url };
}

async function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'kpilens-cockpit-'));
  execFileSync(bin, ['generate', '--out', join(dataDir, 'demo')], { stdio: 'ignore' });
  // The demo command: named demo users with tokens (the cockpit's "viewing as" list). Warm-up
  // is off so that the first render is measured cold.
  ({ child: server, url: base } = await spawnDemo(['--project', repo, '--data', join(dataDir, 'demo'),
    '--audit-log', join(dataDir, 'audit.log')]));
}

let users;

/** The API as a demo user (default: the head office, whom the cockpit shows first). */
async function api(path, body, who = 'head_office') {
  users ??= await (await fetch(`${base}/api/v1/demo/users`)).json();
  const auth = { Authorization: `Bearer ${users.find((u) => u.id === who).token}` };
  const response = await fetch(`${base}${path}`, body === undefined ? { headers: auth } : {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...auth },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `${path}: ${response.status}`);
  return response.json();
}

async function openPage(viewport, hash = 'executive', who = 'head_office') {
  const page = await browser.newPage({ viewport, deviceScaleFactor: viewport === PHONE ? 2 : 1 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // The page runs under the server's Content-Security-Policy: anything it blocks is a failure.
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) errors.push(m.text());
  });
  page.errors = errors;
  await page.addInitScript((user) => {
    localStorage.setItem('kpilens.lang', 'zh');
    localStorage.setItem('kpilens.user', user);
  }, who);
  await page.goto(`${base}/#${hash}`);
  return page;
}

/** Milliseconds from navigation start until every panel of the dashboard has rendered. */
async function timeToFirstRender(page, id) {
  await page.waitForSelector(`body[data-ready="${id}"]`, { timeout: 60_000 });
  await page.waitForFunction(() => document.querySelectorAll('[data-state="loading"]').length === 0);
  return page.evaluate(() => performance.now());
}

const panelState = (page, id) => page.locator(`[data-panel="${id}"]`).getAttribute('data-state');

async function waitPanelReady(page, id) {
  await page.waitForFunction((pid) => document.querySelector(`[data-panel="${pid}"]`)?.dataset.state === 'ready', id);
}

const chartOption = (page, id) => page.evaluate((pid) => {
  const o = window.__kpilens.charts.get(pid).getOption();
  return { series: o.series.map((s) => ({ data: s.data })), yAxis: o.yAxis?.map((a) => a.data), xAxis: o.xAxis?.map((a) => a.data) };
}, id);

const col = (result, name) => result.schema.findIndex((f) => f.name === name);
const values = (result, name) => result.rows.map((r) => r[col(result, name)]);
const seriesValues = (data) => data.map((d) => (d !== null && typeof d === 'object' ? d.value : d));

/** Once a chart has drawn (ECharts animates it in; on a loaded machine that takes longer). */
const chartDrawn = (page, id) => page.evaluate((pid) => new Promise((resolve) => {
  window.__kpilens.charts.get(pid).on('finished', resolve);
  setTimeout(resolve, 3000);
}), id);

/** The pixel of the middle of a bar chart's first bar, for a real click on it. */
const firstBar = (page, id) => page.evaluate((pid) => {
  const chart = window.__kpilens.charts.get(pid);
  const value = chart.getOption().series[0].data[0];
  const [x, y] = chart.convertToPixel({ seriesIndex: 0 }, [(typeof value === 'object' ? value.value : value) / 2, 0]);
  return { x, y };
}, id);

/** A real click on a bar chart's first bar, at its pixel; resolves once the drilled view shows. */
async function clickFirstBar(page, id) {
  await chartDrawn(page, id);
  await page.locator(`[data-panel="${id}"] .chart`).click({ position: await firstBar(page, id) });
  await page.waitForFunction((pid) => document.querySelectorAll(`[data-panel="${pid}"] .crumb`).length === 2, id);
  await waitPanelReady(page, id);
}

/** Clicks a table panel's first row down the four org levels, to its list of customers. */
async function drillToLeaf(page, id) {
  for (let depth = 1; depth <= 4; depth += 1) {
    await page.locator(`[data-panel="${id}"] tbody tr`).first().click();
    await page.waitForFunction(([pid, n]) => document.querySelectorAll(`[data-panel="${pid}"] .crumb`).length === n, [id, depth + 1]);
    await waitPanelReady(page, id);
  }
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('the cockpit', () => {
  const timings = {};

  it('renders the executive dashboard with the API numbers, cold and cached', async () => {
    // First: nothing has asked the server anything yet, so this is the cold render.
    const page = await openPage(DESKTOP);
    timings.cold_ms = Math.round(await timeToFirstRender(page, 'executive'));
    const lastRender = () => page.evaluate(() => window.__kpilens.renders.at(-1));
    timings.cold_server_ms = (await lastRender()).server_ms;
    await page.reload();
    timings.cached_ms = Math.round(await timeToFirstRender(page, 'executive'));
    timings.cached_server_ms = (await lastRender()).server_ms;
    assert.deepEqual(page.errors, []);

    const view = await api('/api/v1/dashboards/executive');
    assert.equal(view.meta.panels_cached, view.meta.panels, 'the page already computed every panel');
    const kpis = view.panels.filter((p) => p.type === 'kpi');
    assert.ok(kpis.length >= 6, 'the overview has its tiles');
    for (const p of kpis) {
      const tile = page.locator(`.tile[data-panel="${p.id}"]`);
      assert.equal(Number(await tile.getAttribute('data-value')), p.tile.value, `${p.id}: value`);
      assert.equal(await tile.locator('.tile-value').textContent(), formatValue(p.tile.value, p.tile.format, 'zh'), `${p.id}: shown`);
      const status = await tile.getAttribute('class');
      assert.ok(status.includes(`status-${p.tile.status ?? 'none'}`), `${p.id}: status ${status}`);
      // 较年初 and 同比 where the dashboard asks: the API's changes, each with its label.
      for (const c of p.tile.changes ?? []) {
        const line = tile.locator(`.tile-change[data-compare="${c.compare}"]`);
        assert.equal(Number(await line.getAttribute('data-delta')), c.delta, `${p.id}: ${c.compare}`);
        assert.match(await line.textContent(), c.compare === 'year_start' ? /较年初/ : /同比/);
      }
    }
    const changes = kpis.flatMap((p) => (p.tile.changes ?? []).map((c) => `${p.id}.${c.compare}`));
    assert.deepEqual(changes, ['loan_balance.year_start', 'aum.year_start', 'aum.same_period_last_year']);

    const bar = view.panels.find((p) => p.id === 'overdue_by_region');
    const barChart = await chartOption(page, bar.id);
    assert.deepEqual(seriesValues(barChart.series[0].data), values(bar.result, 'overdue_ratio'));
    assert.deepEqual(barChart.yAxis[0], values(bar.result, 'region'));

    const area = view.panels.find((p) => p.id === 'aum_trend');
    assert.deepEqual(seriesValues((await chartOption(page, area.id)).series[0].data), values(area.result, 'aum'));

    const funnel = view.panels.find((p) => p.id === 'credit_funnel');
    const funnelChart = await chartOption(page, funnel.id);
    assert.deepEqual(seriesValues(funnelChart.series[0].data), values(funnel.result, 'credit_funnel'));
    // Steps by their labels from the YAML, not their keys.
    assert.deepEqual(funnelChart.series[0].data.map((d) => d.name),
      ['商机线索', '尽职调查', '授信申请', '审批通过', '签订合同', '放款']);
    assert.equal(funnel.result.schema.find((f) => f.name === 'step').value_labels.due_diligence.en, 'Due diligence');

    const table = view.panels.find((p) => p.id === 'churn_by_region');
    const shown = await page.locator(`[data-panel="${table.id}"] td[data-metric="customers_churned"]`)
      .evaluateAll((cells) => cells.map((c) => Number(c.dataset.value)));
    assert.deepEqual(shown, values(table.result, 'customers_churned'));

    // The branch ranking by attainment (the year to date), paced by the time gone: the cells
    // are the API's numbers, ranked, with the target null where a branch has none.
    const ranking = view.panels.find((p) => p.id === 'branch_attainment');
    assert.ok(ranking.result.rows.length > 0, 'attainment rows');
    for (const m of ['disbursed_attainment', 'disbursed_target', 'time_progress']) {
      const cells = await page.locator(`[data-panel="${ranking.id}"] td[data-metric="${m}"]`)
        .evaluateAll((cs) => cs.map((c) => (c.dataset.value === '' ? null : Number(c.dataset.value))));
      assert.deepEqual(cells, values(ranking.result, m), m);
    }
    const attained = values(ranking.result, 'disbursed_attainment').filter((v) => v !== null);
    assert.deepEqual(attained, [...attained].sort((a, b) => b - a), 'ranked by attainment');

    await page.screenshot({ path: join(shots, 'executive-desktop.png'), fullPage: true });
    await page.close();
    writeFileSync(join(output, 'cockpit-timings.json'), `${JSON.stringify(timings, null, 2)}\n`);
    console.log(`time to first render of the executive dashboard: cold ${timings.cold_ms} ms`
      + ` (server ${timings.cold_server_ms} ms), cached ${timings.cached_ms} ms (server ${timings.cached_server_ms} ms)`);
  });

  it('drills a region bar to its branches, and the breadcrumb returns', async () => {
    const page = await openPage(DESKTOP);
    await timeToFirstRender(page, 'executive');
    const panel = 'overdue_by_region';
    const before = await chartOption(page, panel);
    const region = before.yAxis[0][0];
    // A real click on the first bar, at its pixel position in the chart, once the bars have
    // grown to it.
    await clickFirstBar(page, panel);

    const view = await api('/api/v1/dashboards/executive');
    const query = { ...view.panels.find((p) => p.id === panel).query, drill: { hierarchy: 'org', path: { region } } };
    const branches = await api('/api/v1/query', query);
    const after = await chartOption(page, panel);
    assert.deepEqual(after.yAxis[0], values(branches, 'branch'));
    assert.deepEqual(seriesValues(after.series[0].data), values(branches, 'overdue_ratio'));
    assert.equal(await page.locator(`[data-panel="${panel}"] .crumb`).last().textContent(), region);

    await page.locator(`[data-panel="${panel}"] .crumb[data-crumb="0"]`).click();
    await page.waitForFunction((pid) => document.querySelectorAll(`[data-panel="${pid}"] .crumb`).length === 1, panel);
    await waitPanelReady(page, panel);
    assert.deepEqual((await chartOption(page, panel)).yAxis[0], before.yAxis[0]);
    await page.close();
  });

  it('drills table rows down to a page of customers, personal data masked for an analyst', async () => {
    const page = await openPage(DESKTOP, 'executive', 'analyst');
    await timeToFirstRender(page, 'executive');
    const panel = 'churn_by_region';
    await drillToLeaf(page, panel);
    const leaf = page.locator(`[data-panel="${panel}"] table.leaf`);
    const headers = await leaf.locator('th').allTextContents();
    const rows = await leaf.locator('tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    assert.ok(rows.length > 0, 'the RM has customers');
    const at = (name) => headers.indexOf(name);
    for (const r of rows) {
      assert.match(r[at('name')], /^.\*+$/u, 'names show the first character only');
      assert.match(r[at('phone')], /^\d{3}\*{4}\d{4}$/, 'phones are masked');
      assert.match(r[at('id_number')], /^\d{6}\*{8}[\dX]{4}$/, 'ID numbers are masked');
    }
    assert.match(await page.locator(`[data-panel="${panel}"] .pager`).textContent(), /第 1 \/ \d+ 页/);
    await page.close();
  });

  it('changes the time window from the filter bar', async () => {
    const page = await openPage(DESKTOP);
    await timeToFirstRender(page, 'executive');
    await page.locator('select[data-filter="periods"]').selectOption('6');
    await page.waitForSelector('body[data-ready="executive"]');
    await page.waitForFunction(() => document.querySelectorAll('[data-state="loading"]').length === 0);
    const view = await api('/api/v1/dashboards/executive?periods=6');
    const area = view.panels.find((p) => p.id === 'aum_trend');
    assert.equal(area.result.rows.length, 6);
    assert.deepEqual(seriesValues((await chartOption(page, area.id)).series[0].data), values(area.result, 'aum'));
    await page.close();
  });

  it('renders the newest filter choice when an older answer arrives late', async () => {
    const page = await openPage(DESKTOP);
    await timeToFirstRender(page, 'executive');
    // The 3-period view is held back until after the 6-period one has rendered.
    let releaseSlow;
    const slowHeld = new Promise((ok) => { releaseSlow = ok; });
    const threePeriods = (url) => url.pathname.endsWith('/api/v1/dashboards/executive')
      && url.searchParams.get('periods') === '3';
    await page.route(threePeriods, async (route) => {
      await slowHeld;
      await route.continue().catch(() => {}); // aborted by the cockpit meanwhile: fine
    });
    await page.locator('select[data-filter="periods"]').selectOption('3');
    await page.locator('select[data-filter="periods"]').selectOption('6');
    await page.waitForSelector('body[data-ready="executive"]');
    releaseSlow();
    await page.waitForTimeout(500);
    const view = await api('/api/v1/dashboards/executive?periods=6');
    const area = view.panels.find((p) => p.id === 'aum_trend');
    assert.equal(area.result.rows.length, 6);
    assert.deepEqual(seriesValues((await chartOption(page, area.id)).series[0].data), values(area.result, 'aum'));
    assert.equal(await page.locator('select[data-filter="periods"]').inputValue(), '6');
    await page.close();
  });

  it('viewed as a branch head, shows only that branch', async () => {
    const page = await openPage(DESKTOP);
    await timeToFirstRender(page, 'executive');
    await page.locator('select[data-viewer]').selectOption('branch_head');
    await page.waitForSelector('body[data-ready="executive"]');
    await page.waitForFunction(() => document.querySelectorAll('[data-state="loading"]').length === 0);
    const view = await api('/api/v1/dashboards/executive', undefined, 'branch_head');
    const bar = view.panels.find((p) => p.id === 'overdue_by_region');
    assert.equal(bar.result.rows.length, 1, 'one region: the branch\'s');
    assert.deepEqual((await chartOption(page, bar.id)).yAxis[0], values(bar.result, 'region'));
    const loans = view.panels.find((p) => p.id === 'loan_balance').tile;
    assert.equal(Number(await page.locator('.tile[data-panel="loan_balance"]').getAttribute('data-value')), loans.value);
    const whole = (await api('/api/v1/dashboards/executive')).panels.find((p) => p.id === 'loan_balance').tile;
    assert.ok(loans.value < whole.value, 'a branch is smaller than the bank');
    await page.close();
  });

  it('shows the viewer\'s firing alerts and open tasks as the API scopes them', async () => {
    await api('/api/v1/alerts/evaluate', {}); // every rule, now (the scheduler may not have yet)
    for (const who of ['head_office', 'branch_head', 'rm']) {
      const firing = (await api('/api/v1/alerts?state=firing&history=0', undefined, who)).alerts;
      const tasks = (await api('/api/v1/tasks?status=open', undefined, who)).tasks;
      if (who === 'head_office') {
        assert.ok(firing.length > 0, 'the demo bank has branches over the overdue threshold');
        assert.ok(tasks.length > 0, 'and tasks for its RMs');
      }
      const page = await openPage(DESKTOP, 'executive', who);
      await page.waitForSelector('#alerts[data-ready="true"]');
      const count = (kind) => page.locator(`.alert-box.${kind}`).getAttribute('data-count');
      assert.equal(await count('alerts'), String(firing.length), `${who}: firing alerts`);
      assert.equal(await count('tasks'), String(tasks.length), `${who}: open tasks`);
      const shown = await page.locator('.alert-box.tasks li[data-task]')
        .evaluateAll((nodes) => nodes.map((n) => n.dataset.task));
      assert.deepEqual(shown, tasks.slice(0, 5).map((t) => t.id));
      const rules = await page.locator('.alert-box.alerts li[data-rule]')
        .evaluateAll((nodes) => nodes.map((n) => n.dataset.rule));
      assert.deepEqual(rules, firing.slice(0, 5).map((a) => a.rule));
      // Each names its deepest member, by the catalog's hierarchy (not levels known to the page).
      const levels = (await api('/api/v1/catalog')).hierarchies.find((h) => h.name === 'org').levels;
      const members = await page.locator('.alert-box.alerts li[data-rule]')
        .evaluateAll((nodes) => nodes.map((n) => n.dataset.member));
      assert.deepEqual(members, firing.slice(0, 5).map((a) => {
        const deepest = [...levels].reverse().find((l) => a.path[l] !== undefined);
        return deepest ? String(a.path[deepest]) : '';
      }));
      if (firing.length > 0) {
        const first = firing[0];
        const text = await page.locator('.alert-box.alerts li[data-rule] .value').first().textContent();
        assert.equal(text, formatValue(first.value, first.format, 'zh'));
      }
      if (who === 'rm') {
        const rm = users.find((u) => u.id === 'rm').scope.rm;
        assert.ok(tasks.every((t) => String(t.owner) === String(rm)), 'an RM sees only their own tasks');
      }
      assert.deepEqual(page.errors, []);
      await page.close();
    }
  });

  it('fits a 375 px phone without horizontal overflow', async () => {
    const page = await openPage(PHONE);
    await timeToFirstRender(page, 'executive');
    await page.waitForTimeout(300); // charts settle to their width
    const widest = await page.evaluate(() => Math.max(
      document.documentElement.scrollWidth,
      ...[...document.querySelectorAll('.tile, .panel, .chart')].map((e) => e.getBoundingClientRect().right),
    ));
    assert.ok(widest <= PHONE.width, `content reaches ${widest}px on a ${PHONE.width}px screen`);
    const tiles = await page.locator('.tile').evaluateAll((ts) => ts.map((t) => t.getBoundingClientRect().width));
    assert.ok(tiles.every((w) => w < PHONE.width / 2), 'tiles sit two abreast');
    await page.screenshot({ path: join(shots, 'executive-phone.png'), fullPage: true });
    await page.close();
  });

  it('switches to English with English labels and formats', async () => {
    const page = await openPage(DESKTOP);
    await timeToFirstRender(page, 'executive');
    await page.locator('#lang').click();
    assert.equal(await page.locator('#title').textContent(), 'Executive overview');
    const view = await api('/api/v1/dashboards/executive');
    const loans = view.panels.find((p) => p.id === 'loan_balance').tile;
    assert.equal(await page.locator('.tile[data-panel="loan_balance"] .tile-value').textContent(), formatValue(loans.value, loans.format, 'en'));
    assert.match(await page.locator('.tile[data-panel="loan_balance"] .tile-value').textContent(), /^¥[\d.]+[BM]$/);
    await page.close();
  });

  it('keeps a pasted token for the tab only', async () => {
    // As outside the demo (no demo users): the reader pastes a token.
    users ??= await (await fetch(`${base}/api/v1/demo/users`)).json();
    const context = await browser.newContext({ viewport: DESKTOP });
    await context.route('**/api/v1/demo/users', (route) => route.fulfill({ status: 404, body: '' }));
    const page = await context.newPage();
    await page.goto(`${base}/#risk`);
    const input = page.locator('input[type="password"]');
    await input.fill(users.find((u) => u.id === 'head_office').token);
    await page.locator('.viewer button, button.tab', { hasText: /登录|Sign in/ }).first().click();
    await page.waitForSelector('body[data-ready="risk"]');
    assert.ok(await page.evaluate(() => sessionStorage.getItem('kpilens.token')), 'kept for the tab');
    assert.equal(await page.evaluate(() => localStorage.getItem('kpilens.token')), null, 'not on disk');
    await page.reload();
    await page.waitForSelector('body[data-ready="risk"]');
    const other = await context.newPage();
    await other.goto(`${base}/#risk`);
    await other.locator('input[type="password"]').waitFor();
    assert.equal(await other.evaluate(() => sessionStorage.getItem('kpilens.token')), null, 'another tab signs in again');
    await context.close();
  });

  it('shows the error when the API fails, and recovers on retry', async () => {
    const page = await browser.newPage({ viewport: DESKTOP });
    let failing = true;
    await page.route('**/api/v1/dashboards/risk*', (route) => (failing
      ? route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: { code: 'overloaded', message: 'the server is saturated; retry shortly' } }) })
      : route.continue()));
    await page.goto(`${base}/#risk`);
    const error = page.locator('#error');
    await error.waitFor({ state: 'visible' });
    assert.match(await error.textContent(), /the server is saturated; retry shortly/);
    failing = false;
    await error.locator('.retry').click();
    await page.waitForSelector('body[data-ready="risk"]');
    assert.equal(await error.isHidden(), true);
    assert.equal(await panelState(page, 'overdue_by_region'), 'ready');
    await page.close();
  });
  // Last in this block: it changes the demo bank's files (and puts them back).
  it('updates itself when a file lands, keeping the drill, and says when the data is from', async () => {
    const page = await openPage(DESKTOP);
    await timeToFirstRender(page, 'executive');
    const freshness = page.locator('#freshness');
    await freshness.waitFor();
    const loadedBefore = await freshness.getAttribute('data-loaded-at');
    const tileValue = async () => Number(await page.locator('.tile[data-panel="loan_balance"]').getAttribute('data-value'));
    const tileOf = (view) => view.panels.find((p) => p.id === 'loan_balance').tile.value;
    const before = tileOf(await api('/api/v1/dashboards/executive'));
    assert.equal(await tileValue(), before);
    // Drilled into a region: a live update keeps the panel there.
    await clickFirstBar(page, 'overdue_by_region');

    // A correction file for the last month lands (written beside, then renamed in, as a loader
    // would): the month's loan balance is counted twice.
    const folder = join(dataDir, 'demo', 'loan_month');
    const last = readdirSync(folder).filter((f) => f.endsWith('.parquet')).sort().at(-1);
    const dropped = join(folder, last.replace(/\.parquet$/, '-correction.parquet'));
    const staged = join(dataDir, 'staged.parquet');
    copyFileSync(join(folder, last), staged);
    const rendersBefore = await page.evaluate(() => window.__kpilens.renders.length);
    renameSync(staged, dropped);
    try {
      await page.waitForFunction((v) => Number(document.querySelector('.tile[data-panel="loan_balance"]')?.dataset.value) !== v,
        before, { timeout: 60_000 });
      const after = tileOf(await api('/api/v1/dashboards/executive'));
      assert.ok(Math.abs(after - 2 * before) < 1e-6 * before, `the month counted twice: ${before} -> ${after}`);
      await page.waitForFunction(() => document.querySelector('[data-panel="overdue_by_region"]')?.dataset.state === 'ready'
        && document.querySelectorAll('[data-panel="overdue_by_region"] .crumb').length === 2);
      assert.equal(await tileValue(), after, 'the tile shows the new number');
      const live = await page.evaluate(() => window.__kpilens.live);
      const change = live.find((e) => e.name === 'data_changed');
      assert.ok(change, `a data_changed event: ${JSON.stringify(live.map((e) => e.name))}`);
      assert.ok(change.data.tables.some((t) => t.table === 'loan_month'), JSON.stringify(change.data));
      const renders = await page.evaluate(() => window.__kpilens.renders);
      assert.ok(renders.length > rendersBefore && renders.at(-1).live, 'redrawn by the live update, not a reload');
      const loadedAfter = await freshness.getAttribute('data-loaded-at');
      assert.ok(loadedAfter > loadedBefore, `${loadedBefore} -> ${loadedAfter}`);
      assert.match(await freshness.textContent(), /数据更新于 \d{2}:\d{2}:\d{2}/);
      await page.screenshot({ path: join(shots, 'live-update-desktop.png') });
      await page.setViewportSize(PHONE);
      await page.screenshot({ path: join(shots, 'live-update-phone.png') });
    } finally {
      rmSync(dropped, { force: true });
    }
    // The file removed: back to the number before (to the last bits a sum keeps: the first
    // answer may come from the model and this one from the rollup, summed in another order).
    await page.waitForFunction((v) => Math.abs(Number(document.querySelector('.tile[data-panel="loan_balance"]')?.dataset.value) - v) <= 1e-9 * v,
      before, { timeout: 60_000 });
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  it('opens the 360° view of an RM\'s customer from the customer list, as the API gives it, and goes back to the list', async () => {
    const page = await openPage(DESKTOP, 'executive', 'rm');
    await timeToFirstRender(page, 'executive');
    const panel = 'churn_by_region';
    await drillToLeaf(page, panel);
    const link = page.locator(`[data-panel="${panel}"] table.leaf a.customer-link`).first();
    const id = await link.getAttribute('data-customer');
    await link.click();
    await page.waitForSelector(`body[data-ready="customer/${id}"]`);
    const profile = await api(`/api/v1/customers/${id}`, undefined, 'rm');
    const section = (sid) => profile.sections.find((s) => s.id === sid);

    // The card: each field as the API has it (the RM may see personal data), a coded value by
    // the label its dimension declares (码值: `retail` reads 零售).
    const card = section('card');
    let labelled = 0;
    for (const [i, c] of card.columns.entries()) {
      if (c.type !== 'string') continue;
      const value = card.rows[0][i];
      const label = c.value_labels?.[value]?.zh;
      if (label) labelled += 1;
      const shown = await page.locator(`[data-section="card"] dd[data-field="${c.name}"]`).textContent();
      assert.equal(shown, label ?? value ?? '—', c.name);
    }
    assert.ok(labelled > 0, 'the segment is shown by its label');
    const loans = section('loans');
    const ci = loans.columns.findIndex((c) => c.name === 'classification');
    if (loans.rows.length) {
      const cell = page.locator(`[data-section="loans"] tbody tr:first-child td:nth-child(${ci + 1 - (loans.at !== undefined ? 1 : 0)})`);
      assert.equal(await cell.textContent(), loans.columns[ci].value_labels[loans.rows[0][ci]].zh);
    }
    assert.match(await page.locator('#title').textContent(), new RegExp(`客户360度视图 · ${id}$`));
    // Balances: the chart's lines are the API's numbers, month by month.
    const balances = section('balances');
    const option = await page.evaluate(() => window.__kpilens.charts.get('customer-balances').getOption());
    balances.columns.slice(1).forEach((c, i) => {
      assert.deepEqual(option.series[i].data, balances.rows.map((r) => r[i + 1]), c.name);
    });
    // Loans now, with classification; products held; the timeline, newest first.
    assert.equal(await page.locator('[data-section="loans"] tbody tr').count(), section('loans').rows.length);
    assert.equal(await page.locator('[data-section="products"] tbody tr').count(), section('products').rows.length);
    const events = page.locator('[data-section="timeline"] li');
    assert.equal(await events.count(), profile.timeline.length);
    assert.ok(profile.timeline.length > 0, 'the customer has events');
    assert.deepEqual(await events.evaluateAll((lis) => lis.map((li) => li.dataset.section)),
      profile.timeline.map((e) => e.section));
    // Back: the dashboard, still at the customer list.
    await page.locator('[data-back]').click();
    await page.waitForSelector('body[data-ready="executive"]');
    await page.locator(`[data-panel="${panel}"] table.leaf`).waitFor();
    assert.equal(await page.locator(`[data-panel="${panel}"] .crumb`).count(), 5);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  it('shows the 360° view on a phone, and refuses another RM\'s customer as if there were none', async () => {
    const mine = await api('/api/v1/drill_through', { model: 'customers', page_size: 1000 }, 'rm');
    const all = await api('/api/v1/drill_through', { model: 'customers', page_size: 1000 }, 'head_office');
    const own = new Set(mine.rows.map((r) => r[0]));
    const other = all.rows.map((r) => r[0]).find((c) => !own.has(c));
    // The RM's customer with the most to show: the longest history, then loans.
    const profiles = [];
    // One at a time: the rate limit would refuse twenty at once.
    for (const r of mine.rows) profiles.push(await api(`/api/v1/customers/${r[0]}`, undefined, 'rm'));
    const weight = { balances: 100, loans: 10 };
    const richness = (p) => p.sections.reduce((n, s) => n + s.rows.length * (weight[s.id] ?? 1), 0);
    const richest = profiles.reduce((a, b) => (richness(b) > richness(a) ? b : a)).customer;
    const page = await openPage(PHONE, `customer/${richest}`, 'rm');
    await page.waitForSelector(`body[data-ready="customer/${richest}"]`);
    await page.waitForTimeout(300); // the chart settles to its width
    const widest = await page.evaluate(() => Math.max(
      document.documentElement.scrollWidth,
      ...[...document.querySelectorAll('.customer-section, .chart')].map((e) => e.getBoundingClientRect().right),
    ));
    assert.ok(widest <= PHONE.width, `content reaches ${widest}px on a ${PHONE.width}px screen`);
    const widths = await page.locator('.customer-section').evaluateAll((ss) => ss.map((s) => s.getBoundingClientRect().width));
    assert.ok(widths.every((w) => w > PHONE.width * 0.8), 'sections stack one per row');
    await page.screenshot({ path: join(shots, 'customer-360-phone.png'), fullPage: true });
    await page.setViewportSize(DESKTOP);
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(shots, 'customer-360-desktop.png'), fullPage: true });
    await page.setViewportSize(PHONE);

    // Another RM's customer, by its link: the same answer as a customer that does not exist.
    await page.evaluate((c) => { location.hash = `customer/${c}`; }, other);
    await page.waitForSelector(`body[data-ready="customer/${other}"]`);
    const refusal = page.locator('.customer-page .panel-error');
    assert.equal(await refusal.getAttribute('data-status'), '404');
    assert.equal(await refusal.textContent(), `no customer '${other}'`);
    await page.evaluate(() => { location.hash = 'customer/99999999'; });
    await page.waitForSelector('body[data-ready="customer/99999999"]');
    assert.equal(await refusal.textContent(), "no customer '99999999'");
    await page.screenshot({ path: join(shots, 'customer-360-refused-phone.png') });
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});

// The worked example on the real Berka files: a project outside the repository's own metrics,
// served by `demo` without demo users (no org chart), the cockpit coming from the binary.
const berkaData = resolve(repo, '..', 'shared', 'data', 'berka');

describe('the Berka example', { skip: !existsSync(join(berkaData, 'loan.asc')) && 'no ../shared/data/berka' }, () => {
  let berka;
  let berkaBase;
  let stateDir;

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'kpilens-berka-'));
    ({ child: berka, url: berkaBase } = await spawnDemo(['--project', join(repo, 'examples', 'berka'),
      '--data', berkaData, '--state', stateDir]));
  });

  after(() => {
    berka?.kill('SIGTERM');
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('renders every panel of its dashboard, drills a region to its districts and a district to its loans', async () => {
    const page = await browser.newPage({ viewport: DESKTOP, acceptDownloads: true });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.addInitScript(() => localStorage.setItem('kpilens.lang', 'en'));
    await page.goto(`${berkaBase}/#berka`);
    await page.waitForSelector('body[data-ready="berka"]', { timeout: 60_000 });
    await page.waitForFunction(() => document.querySelectorAll('[data-state="loading"]').length === 0);
    const states = await page.evaluate(() => [...document.querySelectorAll('[data-panel]')].map((p) => [p.dataset.panel, p.dataset.state]));
    assert.ok(states.length >= 10, JSON.stringify(states));
    for (const [id, state] of states) assert.equal(state, 'ready', `panel ${id}`);
    await page.waitForFunction(() => ['loan_volume', 'bad_loans_by_region', 'loans_by_status'].every((id) => window.__kpilens?.charts?.get(id)));
    const volume = await page.evaluate(() => window.__kpilens.charts.get('loan_volume').getOption().series[0].data);
    assert.equal(volume.length, 6, 'six years, 1993-1998');
    await Promise.all(['loan_volume', 'bad_loans_by_region', 'loans_by_status'].map((id) => chartDrawn(page, id)));
    await page.screenshot({ path: join(shots, 'berka-desktop.png'), fullPage: true });

    // A click on the first region's bar drills to that region's districts.
    const panel = 'bad_loans_by_region';
    const before = await chartOption(page, panel);
    const region = before.yAxis[0][0];
    await clickFirstBar(page, panel);
    const districts = await (await fetch(`${berkaBase}/api/v1/query`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ metrics: ['loans'], dimensions: ['district'], filters: [{ dimension: 'region', op: 'eq', value: region }] }),
    })).json();
    await page.waitForFunction((pid) => window.__kpilens.charts.get(pid), panel);
    const shown = (await chartOption(page, panel)).yAxis[0];
    assert.deepEqual([...shown].sort(), values(districts, 'district').sort());

    // A district's bar lists its loans, titled with the model's label.
    const district = shown[0];
    await chartDrawn(page, panel);
    await page.locator(`[data-panel="${panel}"] .chart`).click({ position: await firstBar(page, panel) });
    await page.locator(`[data-panel="${panel}"] .leaf-title`).waitFor();
    assert.equal(await page.locator(`[data-panel="${panel}"] .leaf-title`).textContent(), 'Loans');
    const loans = districts.rows.find((r) => r[col(districts, 'district')] === district)[col(districts, 'loans')];
    assert.match(await page.locator(`[data-panel="${panel}"] .pager`).textContent(), new RegExp(`, ${loans} rows`));

    // Export: the list shown (every loan of the district), and a whole panel, as workbooks.
    const saved = async (id) => {
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.locator(`[data-export="${id}"]`).click(),
      ]);
      const path = await download.path();
      return { name: download.suggestedFilename(), bytes: readFileSync(path) };
    };
    const list = await saved(panel);
    assert.equal(list.name, 'kpilens-loan.xlsx');
    assert.equal(list.bytes.subarray(0, 2).toString(), 'PK', 'an xlsx is a zip');
    const table = await saved('card_penetration');
    assert.equal(table.name, 'kpilens-berka_card_penetration.xlsx');
    assert.ok(table.bytes.length > 2000);
    assert.deepEqual(errors, []);
    await page.close();
  });
});

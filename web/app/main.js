// The cockpit: a dashboard switcher, a filter bar, KPI tiles and charts from one
// `GET /api/v1/dashboards/{id}`; clicks on bars and table rows drill the org hierarchy through
// `POST /api/v1/query`, and at the leaf list customers through `POST /api/v1/drill_through`;
// a customer's id in a list opens the 360° customer view (`#customer/{id}`).

import { renderAlerts } from './alerts.js';
import { customerPage } from './customer.js';
import { api, setToken } from './api.js';
import { chartOption, column, field } from './charts.js';
import { changeTone, formatChange, formatValue } from './format.js';
import { label, t, valueText } from './i18n.js';
import { el } from './dom.js';
import { follow } from './live.js';

const LEAF_PAGE_SIZE = 20;

const state = {
  lang: localStorage.getItem('kpilens.lang') ?? 'zh',
  dashboards: [],
  // The demo's people (or null outside the demo, where a token is pasted in).
  users: null,
  id: null,
  params: {},
  view: null,
  // panel id -> { layout, result, path, leaf: {page, data} | null }
  panels: new Map(),
  charts: new Map(),
  // The dashboard load in flight: a newer one aborts it, and only the newest renders.
  loading: { generation: 0, controller: null },
  // The server's change stream, and when the data serving now was loaded (shown in the head).
  live: { stream: null, loadedAt: null, timer: null, pending: null },
  // The catalog's customer view (`{ key, label }`), or null where the project declares none.
  profile: null,
  // The customer page shown instead of the dashboard: `{ id, data, error }`, or null.
  customer: null,
  backInHistory: false,
};

// Test and diagnostics hook: charts by panel, each dashboard render's time, the live events.
window.__kpilens = { charts: state.charts, renders: [], live: [] };

const $ = (sel, root = document) => root.querySelector(sel);


// ---- shell: header, switcher, language --------------------------------------------------------

function renderHeader() {
  const nav = $('#switcher');
  nav.replaceChildren(
    ...state.dashboards.map((d) => el('button', {
      class: d.id === state.id ? 'tab active' : 'tab',
      dataset: { dashboard: d.id },
      onclick: () => switchTo(d.id),
    }, label(d.title, state.lang, d.id))),
  );
  $('#brand-sub').textContent = t(state.lang, 'product');
  $('#lang').textContent = t(state.lang, 'language');
  renderViewer();
  document.documentElement.lang = state.lang === 'zh' ? 'zh-CN' : 'en';
}

/** Who the cockpit is viewed as: the demo's people, or a pasted token. */
function renderViewer() {
  const box = $('#viewer');
  if (state.users) {
    const current = localStorage.getItem('kpilens.user') ?? state.users[0]?.id;
    const select = el('select', {
      'aria-label': t(state.lang, 'viewAs'),
      dataset: { viewer: '' },
      onchange: (ev) => viewAs(ev.target.value),
    }, ...state.users.map((u) => el('option', { value: u.id, selected: u.id === current }, label(u.label, state.lang, u.id))));
    box.replaceChildren(el('span', { class: 'viewer-label' }, t(state.lang, 'viewAs')), select);
  } else {
    const input = el('input', {
      type: 'password',
      placeholder: t(state.lang, 'token'),
      value: sessionStorage.getItem('kpilens.token') ?? '',
      'aria-label': t(state.lang, 'token'),
    });
    const apply = el('button', {
      class: 'tab',
      onclick: () => {
        sessionStorage.setItem('kpilens.token', input.value.trim());
        setToken(input.value.trim());
        boot();
      },
    }, t(state.lang, 'signIn'));
    box.replaceChildren(input, apply);
  }
}

async function viewAs(id) {
  const user = state.users.find((u) => u.id === id) ?? state.users[0];
  localStorage.setItem('kpilens.user', user.id);
  setToken(user.token);
  state.params = {};
  startLive();
  if (state.id) await load();
}

function showError(message, retry) {
  const box = $('#error');
  box.replaceChildren(
    el('strong', {}, t(state.lang, 'error')),
    el('span', { class: 'error-message' }, message),
    retry ? el('button', { class: 'retry', onclick: retry }, t(state.lang, 'retry')) : null,
  );
  box.hidden = false;
}

function clearError() {
  $('#error').hidden = true;
}

function setLoading(on) {
  $('#loading').hidden = !on;
  document.body.dataset.loading = on ? '1' : '';
}

// ---- loading a dashboard ---------------------------------------------------------------------

async function switchTo(id) {
  if (id !== state.id) state.params = {};
  state.id = id;
  state.customer = null;
  history.replaceState(null, '', `#${id}`);
  renderHeader();
  await load();
}

/** `quiet`: a live refresh, drawn over what is shown without the loading overlay. */
async function load({ quiet = false } = {}) {
  const started = performance.now();
  // A quick second filter change must not be overwritten by the first one's slower answer.
  state.loading.controller?.abort();
  const controller = new AbortController();
  const generation = ++state.loading.generation;
  state.loading.controller = controller;
  const current = () => generation === state.loading.generation;
  document.body.dataset.ready = '';
  if (!quiet) setLoading(true);
  clearError();
  // Alongside the dashboard, never in its way.
  renderAlerts($('#alerts'), state.lang);
  try {
    const view = await api.dashboard(state.id, state.params, { signal: controller.signal });
    if (!current()) return;
    state.view = view;
    state.panels = new Map(view.panels.map((p) => [p.id, {
      layout: p, result: p.result ?? null, error: p.error ?? null, tile: p.tile ?? null, path: {}, leaf: null,
    }]));
    renderDashboard();
    window.__kpilens.renders.push({
      id: state.id,
      ms: performance.now() - started,
      server_ms: view.meta.elapsed_ms,
      cached: view.meta.panels_cached,
      live: quiet,
    });
    document.body.dataset.ready = state.id;
  } catch (e) {
    if (!current()) return; // replaced by a newer load (aborted or not): not this one's to show
    $('#content').replaceChildren();
    showError(e.message, () => load());
  } finally {
    if (current()) setLoading(false);
  }
}

// ---- live updates ------------------------------------------------------------------------------

/** (Re)opens the change stream as the current viewer. */
function startLive() {
  state.live.stream?.stop();
  state.live.stream = follow(onLiveEvent);
}

function onLiveEvent(name, data) {
  window.__kpilens.live.push({ name, data });
  if (name === 'state') {
    // On a reconnect, changes may have been missed while the stream was down.
    const missed = state.live.loadedAt !== null && data.loaded_at !== state.live.loadedAt;
    state.live.loadedAt = data.loaded_at;
    renderFreshness(false);
    if (missed) scheduleRefresh(false);
  } else if (name === 'data_changed') {
    state.live.loadedAt = data.loaded_at;
    scheduleRefresh(false);
  } else if (name === 'catalog_changed') {
    state.live.loadedAt = data.loaded_at;
    scheduleRefresh(true);
  } else if (name === 'lagged') {
    scheduleRefresh(true);
  }
}

/** Several changes in a burst (files landing one by one) refetch once. */
function scheduleRefresh(catalog) {
  clearTimeout(state.live.timer);
  const again = state.live.pending;
  state.live.pending = { catalog: catalog || again?.catalog };
  state.live.timer = setTimeout(() => {
    const { catalog: definitions } = state.live.pending;
    state.live.pending = null;
    refreshLive(definitions);
  }, 300);
}

/**
 * Refetches what is on screen over the new state (answers the server computes once and then
 * caches), keeping each panel where it was drilled to.
 */
async function refreshLive(definitions) {
  if (!state.id) return;
  if (definitions) {
    try {
      state.dashboards = await api.dashboards();
      state.profile = (await api.catalog()).profile ?? null;
      renderHeader();
    } catch {
      // the view's own load below reports what is wrong
    }
  }
  if (state.customer) {
    await showCustomer(state.customer.id, { quiet: true });
    renderFreshness(true);
    return;
  }
  const drilled = [...state.panels].map(([id, ps]) => [id, ps.path, ps.leaf?.page ?? null]);
  await load({ quiet: true });
  for (const [id, path, page] of drilled) {
    const ps = state.panels.get(id);
    if (!ps || !ps.layout.drill) continue;
    if (page !== null) await showLeaf(ps, path, page);
    else if (Object.keys(path).length) await requery(ps, path);
  }
  renderFreshness(true);
}

/** When the numbers are from: the time the server loaded the data it answers from. */
function renderFreshness(updated) {
  const box = $('#freshness');
  const at = state.live.loadedAt;
  if (!at) {
    box.hidden = true;
    return;
  }
  const when = new Date(at);
  const locale = state.lang === 'zh' ? 'zh-CN' : 'en-GB';
  const today = when.toDateString() === new Date().toDateString();
  const text = today
    ? when.toLocaleTimeString(locale, { hour12: false })
    : when.toLocaleString(locale, { hour12: false });
  box.replaceChildren(el('span', { class: 'live-dot', 'aria-hidden': 'true' }), `${t(state.lang, 'dataLoaded')} ${text}`);
  box.dataset.loadedAt = at;
  box.hidden = false;
  if (updated) {
    box.classList.remove('updated');
    void box.offsetWidth; // restart the highlight
    box.classList.add('updated');
  }
}

// ---- the dashboard -----------------------------------------------------------------------------

function renderDashboard() {
  const view = state.view;
  disposeCharts();
  document.title = `${label(view.title, state.lang)} · kpilens`;
  $('#title').textContent = label(view.title, state.lang);
  $('#as-of').textContent = `${t(state.lang, 'asOf')} ${view.as_of}`;
  renderFreshness(false);
  renderFilters(view);
  const tiles = el('section', { class: 'tiles' });
  const grid = el('section', { class: 'grid' });
  for (const ps of state.panels.values()) {
    if (ps.layout.type === 'kpi') tiles.append(renderTile(ps));
    else grid.append(panelShell(ps));
  }
  $('#content').replaceChildren(tiles, grid);
  for (const ps of state.panels.values()) {
    if (ps.layout.type !== 'kpi') renderPanelBody(ps);
  }
}

const WINDOW_CHOICES = [3, 6, 12, 24, 36];

/** The time range: how many periods, ending at which date. */
function timeFilters(view) {
  const set = (key) => (ev) => {
    state.params = { ...state.params, [key]: ev.target.value };
    load();
  };
  const choices = [...new Set([...WINDOW_CHOICES, view.window.periods])].sort((a, b) => a - b);
  const periods = el('select', { dataset: { filter: 'periods' }, onchange: set('periods') },
    ...choices.map((n) => el('option', { value: n, selected: n === view.window.periods },
      t(state.lang, `last_${view.window.grain}`, { n }))));
  const asOf = el('input', { type: 'date', value: view.as_of, dataset: { filter: 'as_of' }, onchange: set('as_of') });
  return [
    el('label', { class: 'filter' }, el('span', {}, t(state.lang, 'window')), periods),
    el('label', { class: 'filter' }, el('span', {}, t(state.lang, 'asOfPick')), asOf),
  ];
}

function renderFilters(view) {
  const bar = $('#filters');
  bar.replaceChildren(...timeFilters(view), ...view.filters.map((f) => {
    const selected = f.selected.length === 1 ? String(f.selected[0]) : '';
    const select = el('select', {
      dataset: { filter: f.dimension },
      'aria-label': label(f.label, state.lang, f.dimension),
      onchange: (ev) => {
        state.params = { ...state.params, [f.dimension]: ev.target.value };
        load();
      },
    },
    el('option', { value: '' }, t(state.lang, 'all')),
    ...f.options.map((o) => el('option', { value: String(o), selected: String(o) === selected }, valueText(f.value_labels, o, state.lang))));
    return el('label', { class: 'filter' }, el('span', {}, label(f.label, state.lang, f.dimension)), select);
  }));
}

// ---- KPI tiles ---------------------------------------------------------------------------------

function renderTile(ps) {
  const tile = ps.tile;
  const layout = ps.layout;
  if (!tile || ps.error) {
    return el('article', { class: 'tile tile-error', dataset: { panel: layout.id, state: 'error' } },
      el('div', { class: 'tile-label' }, label(layout.title, state.lang)),
      el('div', { class: 'tile-message' }, ps.error?.message ?? t(state.lang, 'panelError')));
  }
  const tone = changeTone(tile.delta, tile.direction);
  const arrow = tile.delta > 0 ? '▲' : tile.delta < 0 ? '▼' : '■';
  return el('article', {
    class: `tile status-${tile.status ?? 'none'}`,
    dataset: { panel: layout.id, state: 'ready', value: tile.value ?? '' },
  },
  el('div', { class: 'tile-label' },
    el('span', {}, label(tile.label, state.lang)),
    tile.status ? el('span', { class: `badge badge-${tile.status}` }, t(state.lang, `status_${tile.status}`)) : null),
  el('div', { class: 'tile-value' }, formatValue(tile.value, tile.format, state.lang)),
  el('div', { class: `tile-change ${tone}` },
    `${arrow} ${formatChange(tile.delta, tile.delta_pct, tile.format, state.lang)}`,
    el('span', { class: 'muted' }, ` ${t(state.lang, 'vsPrevious')}`)),
  ...(tile.changes ?? []).map((c) => {
    const more = c.delta > 0 ? '▲' : c.delta < 0 ? '▼' : '■';
    return el('div', {
      class: `tile-change ${changeTone(c.delta, tile.direction)}`,
      dataset: { compare: c.compare, delta: c.delta ?? '' },
    },
    `${more} ${formatChange(c.delta, c.delta_pct, tile.format, state.lang)}`,
    el('span', { class: 'muted' }, ` ${t(state.lang, `vs_${c.compare}`)}`));
  }),
  sparkline(tile.spark, tone));
}

function sparkline(values, tone) {
  const w = 120;
  const h = 28;
  const nums = values.filter((v) => v !== null);
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('class', `spark ${tone}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  if (nums.length < 2) return svg;
  const min = Math.min(...nums);
  const max = Math.max(...nums);
  const y = (v) => (max === min ? h / 2 : h - 2 - ((v - min) / (max - min)) * (h - 4));
  const step = w / (values.length - 1);
  const points = values
    .map((v, i) => (v === null ? null : `${(i * step).toFixed(1)},${y(v).toFixed(1)}`))
    .filter(Boolean)
    .join(' ');
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points);
  svg.append(line);
  return svg;
}

// ---- chart and table panels ----------------------------------------------------------------------

function panelShell(ps) {
  const layout = ps.layout;
  return el('article', {
    class: `panel w-${layout.width} type-${layout.type}`,
    dataset: { panel: layout.id, state: 'loading' },
  },
  el('header', { class: 'panel-head' },
    el('h2', {}, label(layout.title, state.lang)),
    layout.drill ? el('nav', { class: 'breadcrumb', 'aria-label': 'drill path' }) : null,
    el('button', {
      class: 'export',
      title: t(state.lang, 'exportHint'),
      dataset: { export: layout.id },
      onclick: () => exportPanel(ps),
    }, t(state.lang, 'export'))),
  el('div', { class: 'panel-body' }));
}

/** What the panel shows now, as a workbook: the list at a leaf, the drilled view, or the panel. */
async function exportPanel(ps) {
  const { layout } = ps;
  const drilled = Object.keys(ps.path).length > 0;
  const what = ps.leaf
    ? { drill_through: { model: layout.drill_through, drill: { hierarchy: layout.drill, path: ps.path } } }
    : drilled
      ? { query: { ...layout.query, drill: { hierarchy: layout.drill, path: ps.path } } }
      : { dashboard: state.id, panel: layout.id, params: state.params };
  try {
    await api.exportFile({ format: 'xlsx', lang: state.lang, ...what });
  } catch (e) {
    showError(e.message);
  }
}

function panelNode(id) {
  return document.querySelector(`.panel[data-panel="${CSS.escape(id)}"]`);
}

function renderPanelBody(ps) {
  const node = panelNode(ps.layout.id);
  if (!node) return;
  const body = $('.panel-body', node);
  disposeChart(ps.layout.id);
  renderBreadcrumb(ps, node);
  if (ps.error) {
    node.dataset.state = 'error';
    body.replaceChildren(el('div', { class: 'panel-error' }, ps.error.message ?? t(state.lang, 'panelError')));
    return;
  }
  if (ps.leaf) {
    body.replaceChildren(leafTable(ps));
    node.dataset.state = 'ready';
    return;
  }
  const result = ps.result;
  if (!result || result.rows.length === 0) {
    body.replaceChildren(el('div', { class: 'empty' }, t(state.lang, 'noData')));
    node.dataset.state = 'ready';
    return;
  }
  if (ps.layout.type === 'table') {
    body.replaceChildren(rankedTable(ps));
  } else if (!window.echarts) {
    body.replaceChildren(el('div', { class: 'panel-error' }, t(state.lang, 'noEcharts')));
  } else {
    const box = el('div', { class: 'chart' });
    body.replaceChildren(box);
    const chart = window.echarts.init(box, null, { renderer: 'svg' });
    chart.setOption(chartOption(ps.layout, result, state.lang));
    if (canDrill(ps)) {
      chart.on('click', (p) => {
        const di = column(result, result.drill.level);
        drill(ps, result.rows[p.dataIndex][di]);
      });
      box.classList.add('drillable');
      box.title = t(state.lang, 'clickToDrill');
    }
    state.charts.set(ps.layout.id, chart);
  }
  node.dataset.state = 'ready';
}

function canDrill(ps) {
  return Boolean(ps.layout.drill && ps.result?.drill?.next_level);
}

/** Ranked rows: rank, the dimensions, then each metric with its change vs the previous period. */
function rankedTable(ps) {
  const { layout, result } = ps;
  const dims = result.schema.filter((f) => f.role === 'dimension');
  const drillable = canDrill(ps);
  const head = el('tr', {},
    el('th', { class: 'num' }, '#'),
    ...dims.map((d) => el('th', {}, label(d.label, state.lang, d.name))),
    ...layout.metrics.map((m) => el('th', { class: 'num' }, label(field(result, m).label, state.lang, m))));
  const rows = result.rows.map((r, i) => {
    const cells = layout.metrics.map((m) => {
      const f = field(result, m);
      const v = r[column(result, m)];
      const di = column(result, `${m}.previous_period.delta`);
      const pi = column(result, `${m}.previous_period.delta_pct`);
      const delta = di >= 0 ? r[di] : null;
      const tone = changeTone(delta, f.direction);
      return el('td', { class: 'num', dataset: { metric: m, value: v ?? '' } },
        el('div', {}, formatValue(v, f.format, state.lang)),
        delta !== null ? el('div', { class: `change ${tone}` }, formatChange(delta, pi >= 0 ? r[pi] : null, f.format, state.lang)) : null);
    });
    return el('tr', {
      class: drillable ? 'drillable' : '',
      onclick: drillable ? () => drill(ps, r[column(result, result.drill.level)]) : undefined,
    },
    el('td', { class: 'num muted' }, String(i + 1)),
    ...dims.map((d) => el('td', {}, valueText(d.value_labels, r[column(result, d.name)], state.lang))),
    ...cells);
  });
  return el('div', { class: 'table-wrap' }, el('table', { class: 'ranked' }, el('thead', {}, head), el('tbody', {}, rows)));
}

// ---- drill down and back -----------------------------------------------------------------------

async function drill(ps, member) {
  const { layout } = ps;
  const level = ps.result.drill.level;
  const levels = layout.drill_levels;
  const path = { ...ps.path, [level]: member };
  const next = levels[levels.indexOf(level) + 1];
  if (next === levels[levels.length - 1] && layout.drill_through) {
    await showLeaf(ps, path, 1);
  } else {
    await requery(ps, path);
  }
}

async function requery(ps, path) {
  const node = panelNode(ps.layout.id);
  node.dataset.state = 'loading';
  try {
    ps.result = Object.keys(path).length === 0
      ? state.view.panels.find((p) => p.id === ps.layout.id).result
      : await api.query({ ...ps.layout.query, drill: { hierarchy: ps.layout.drill, path } });
    ps.error = null;
  } catch (e) {
    ps.error = { message: e.message };
  }
  ps.path = path;
  ps.leaf = null;
  renderPanelBody(ps);
}

async function showLeaf(ps, path, page) {
  const node = panelNode(ps.layout.id);
  node.dataset.state = 'loading';
  try {
    const data = await api.drillThrough({
      model: ps.layout.drill_through,
      drill: { hierarchy: ps.layout.drill, path },
      page,
      page_size: LEAF_PAGE_SIZE,
    });
    ps.leaf = { page, data };
    ps.error = null;
  } catch (e) {
    ps.error = { message: e.message };
  }
  ps.path = path;
  renderPanelBody(ps);
}

function renderBreadcrumb(ps, node) {
  const nav = $('.breadcrumb', node);
  if (!nav) return;
  const entries = Object.entries(ps.path);
  const crumbs = [el('button', {
    class: 'crumb',
    dataset: { crumb: 0 },
    disabled: entries.length === 0,
    onclick: () => requery(ps, {}),
  }, t(state.lang, 'allOrg'))];
  entries.forEach(([, member], i) => {
    const upTo = Object.fromEntries(entries.slice(0, i + 1));
    const last = i === entries.length - 1;
    crumbs.push(el('span', { class: 'sep' }, '›'));
    crumbs.push(el('button', {
      class: 'crumb',
      dataset: { crumb: i + 1 },
      disabled: last,
      onclick: () => requery(ps, upTo),
    }, String(member)));
  });
  nav.replaceChildren(...crumbs);
}

/** The leaf: the rows behind the number (customers, loans), personal data masked by the server. */
function leafTable(ps) {
  const { page, data } = ps.leaf;
  const pages = Math.max(1, Math.ceil(data.total / data.page_size));
  const path = ps.path;
  const keyAt = state.profile ? data.columns.findIndex((c) => c.name === state.profile.key) : -1;
  const cell = (v, i) => {
    if (v === null) return el('td', {}, '—');
    if (i !== keyAt) return el('td', {}, valueText(data.columns[i].value_labels, v, state.lang));
    return el('td', {}, el('a', {
      class: 'customer-link',
      href: `#customer/${encodeURIComponent(v)}`,
      title: t(state.lang, 'openCustomer'),
      dataset: { customer: String(v) },
    }, String(v)));
  };
  const table = el('table', { class: 'leaf' },
    el('thead', {}, el('tr', {}, ...data.columns.map((c) => el('th', {}, c.name)))),
    el('tbody', {}, data.rows.map((r) => el('tr', {}, ...r.map(cell)))));
  return el('div', { class: 'leaf-view' },
    el('div', { class: 'leaf-title' }, label(data.label, state.lang, t(state.lang, 'rows'))),
    el('div', { class: 'table-wrap' }, table),
    el('div', { class: 'pager' },
      el('button', { disabled: page <= 1, onclick: () => showLeaf(ps, path, page - 1) }, t(state.lang, 'prev')),
      el('span', { class: 'muted' }, t(state.lang, 'page', { page, pages, total: data.total })),
      el('button', { disabled: page >= pages, onclick: () => showLeaf(ps, path, page + 1) }, t(state.lang, 'next'))));
}

// ---- the 360° customer view ----------------------------------------------------------------------

/** Shows a customer's page in place of the dashboard (which keeps its drills for the way back). */
async function showCustomer(id, { quiet = false } = {}) {
  state.loading.controller?.abort();
  const generation = ++state.loading.generation;
  const current = () => generation === state.loading.generation;
  document.body.dataset.ready = '';
  if (!quiet) setLoading(true);
  clearError();
  try {
    const data = await api.customer(id);
    if (!current()) return;
    state.customer = { id, data, error: null };
  } catch (e) {
    if (!current()) return;
    state.customer = { id, data: null, error: e };
  } finally {
    if (current()) setLoading(false);
  }
  renderCustomer();
  document.body.dataset.ready = `customer/${id}`;
}

function renderCustomer() {
  const { id, data, error } = state.customer;
  disposeCharts();
  const title = label(state.profile?.label ?? data?.label, state.lang, t(state.lang, 'openCustomer'));
  document.title = `${title} · ${id} · kpilens`;
  $('#title').textContent = `${title} · ${id}`;
  $('#as-of').textContent = '';
  $('#filters').replaceChildren();
  renderFreshness(false);
  const back = el('button', { class: 'back', dataset: { back: '' }, onclick: leaveCustomer }, `← ${t(state.lang, 'back')}`);
  if (error) {
    $('#content').replaceChildren(el('div', { class: 'customer-page' }, back,
      el('div', { class: 'panel-error', dataset: { status: error.status ?? '' } }, error.message)));
    return;
  }
  const { nodes, charts } = customerPage(data, state.lang);
  $('#content').replaceChildren(el('div', { class: 'customer-page' }, back, el('div', { class: 'customer-grid' }, nodes)));
  if (!window.echarts) return;
  for (const c of charts) {
    const chart = window.echarts.init(c.node, null, { renderer: 'svg' });
    chart.setOption(c.option);
    state.charts.set(c.id, chart);
  }
}

/** Back to the dashboard, drilled where it was left. */
function leaveCustomer() {
  if (state.backInHistory) history.back();
  else location.hash = state.id ?? '';
}

/** `#customer/42` opens a customer; a dashboard's id goes back to it. */
async function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith('customer/')) {
    // Reached from the dashboard: going back is the browser's back.
    if (!state.customer) state.backInHistory = Boolean(state.view);
    await showCustomer(hash.slice('customer/'.length));
    return;
  }
  if (!state.customer) return;
  state.customer = null;
  state.backInHistory = false;
  if (state.view && (hash === state.id || hash === '')) {
    history.replaceState(null, '', `#${state.id}`);
    renderDashboard();
    document.body.dataset.ready = state.id;
  } else {
    await switchTo(state.dashboards.some((d) => d.id === hash) ? hash : state.id);
  }
}

window.addEventListener('hashchange', route);

// ---- charts' lifecycle -------------------------------------------------------------------------

function disposeChart(id) {
  state.charts.get(id)?.dispose();
  state.charts.delete(id);
}

function disposeCharts() {
  for (const id of [...state.charts.keys()]) disposeChart(id);
}

let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => state.charts.forEach((c) => c.resize()), 100);
});

// ---- start ---------------------------------------------------------------------------------------

let langWired = false;

async function boot() {
  if (!langWired) {
    langWired = true;
    $('#lang').addEventListener('click', () => {
      state.lang = state.lang === 'zh' ? 'en' : 'zh';
      localStorage.setItem('kpilens.lang', state.lang);
      renderHeader();
      renderAlerts($('#alerts'), state.lang);
      // Drilled panels keep their place: they re-render from their state.
      if (state.customer) renderCustomer();
      else if (state.view) renderDashboard();
    });
  }
  try {
    const users = await api.demoUsers();
    state.users = users.length ? users : null; // a demo without its users: as not the demo
  } catch {
    state.users = null; // not the demo: a token is pasted in
  }
  if (state.users) {
    const wanted = localStorage.getItem('kpilens.user');
    setToken((state.users.find((u) => u.id === wanted) ?? state.users[0]).token);
  } else {
    setToken(sessionStorage.getItem('kpilens.token'));
  }
  startLive();
  renderHeader();
  setLoading(true);
  try {
    [state.dashboards, state.profile] = await Promise.all([
      api.dashboards(),
      api.catalog().then((c) => c.profile ?? null),
    ]);
  } catch (e) {
    setLoading(false);
    showError(e.message, () => boot());
    return;
  }
  const wanted = decodeURIComponent(location.hash.slice(1));
  const id = state.dashboards.some((d) => d.id === wanted) ? wanted : state.dashboards[0]?.id;
  if (wanted.startsWith('customer/')) {
    // Opened on a customer (a shared link): the dashboard loads on the way back.
    state.id = id ?? null;
    renderHeader();
    await route();
    return;
  }
  if (!id) {
    setLoading(false);
    showError('no dashboards are defined (dashboards/*.yaml)');
    return;
  }
  await switchTo(id);
}

boot();


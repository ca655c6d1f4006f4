// The 360° customer view (客户360度视图): one customer's sections from
// `GET /api/v1/customers/{id}`, laid out by what each section declares it shows: fields, a chart
// over time, a table, or events merged on one timeline. Personal data arrives masked by the server.

import { formatValue } from './format.js';
import { label, t, valueText } from './i18n.js';
import { el } from './dom.js';

const DASH = '—';

/** One cell as its column says: numbers by their format, a time shortened to the minute. */
export function cellText(value, column, lang) {
  if (value === null || value === undefined) return DASH;
  if (column.type === 'number' && column.format) return formatValue(value, column.format, lang);
  if (typeof value === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value)) {
    return value.slice(0, 16).replace('T', ' ');
  }
  return valueText(column.value_labels, value, lang);
}

const heading = (c, lang) => label(c.label, lang, c.name);

function fields(section, lang) {
  const row = section.rows[0] ?? [];
  return el('dl', { class: 'fields' }, section.columns.flatMap((c, i) => [
    el('dt', {}, heading(c, lang)),
    el('dd', { dataset: { field: c.name }, class: c.masked ? 'masked' : null }, cellText(row[i], c, lang)),
  ]));
}

/** A table's rows; a `latest` table's time is said once, in its heading, not on every row. */
function table(section, lang) {
  if (!section.rows.length) return el('div', { class: 'muted empty' }, t(lang, 'noData'));
  const from = section.at !== undefined ? 1 : 0;
  const columns = section.columns.slice(from);
  return el('div', { class: 'table-wrap' }, el('table', { class: 'leaf' },
    el('thead', {}, el('tr', {}, columns.map((c) => el('th', { class: c.type === 'number' ? 'num' : null }, heading(c, lang))))),
    el('tbody', {}, section.rows.map((r) => el('tr', {}, r.slice(from).map((v, i) => el('td', {
      class: columns[i].type === 'number' ? 'num' : null,
    }, cellText(v, columns[i], lang))))))));
}

/** A line per column over the section's time column (its first). */
function chartOption(section, lang) {
  const [time, ...series] = section.columns;
  return {
    animation: false,
    tooltip: {
      trigger: 'axis',
      valueFormatter: (v) => formatValue(v, series[0]?.format, lang),
    },
    legend: { top: 0, data: series.map((c) => heading(c, lang)) },
    grid: { left: 8, right: 16, top: 32, bottom: 8, containLabel: true },
    xAxis: { type: 'category', data: section.rows.map((r) => cellText(r[0], time, lang)) },
    yAxis: { type: 'value', axisLabel: { formatter: (v) => formatValue(v, series[0]?.format, lang) } },
    series: series.map((c, i) => ({
      name: heading(c, lang),
      type: 'line',
      // A customer new this month has one point: a line alone would not show it.
      showSymbol: section.rows.length < 3,
      data: section.rows.map((r) => r[i + 1]),
    })),
  };
}

function timeline(profile, lang) {
  const sections = new Map(profile.sections.map((s) => [s.id, s]));
  if (!profile.timeline.length) return el('div', { class: 'muted empty' }, t(lang, 'noData'));
  return el('ol', { class: 'timeline' }, profile.timeline.map((e) => {
    const s = sections.get(e.section);
    const columns = s.columns.slice(1);
    return el('li', { dataset: { section: e.section } },
      el('time', {}, cellText(e.at, s.columns[0], lang)),
      el('span', { class: 'event-kind' }, label(s.label, lang, s.id)),
      el('span', { class: 'event-body' }, columns.map((c, i) => el('span', { class: 'event-value', dataset: { field: c.name } },
        el('small', { class: 'muted' }, heading(c, lang)), ' ', cellText(e.values[i], c, lang)))));
  }));
}

/**
 * The page's nodes, and the charts to draw once they are in the document (ECharts measures its
 * container): `[{ node, option }]`.
 */
export function customerPage(profile, lang) {
  const charts = [];
  const cards = [];
  let timelineShown = false;
  for (const s of profile.sections) {
    let body;
    if (s.show === 'fields') body = fields(s, lang);
    else if (s.show === 'table') body = table(s, lang);
    else if (s.show === 'chart') {
      body = el('div', { class: 'chart customer-chart' });
      if (s.rows.length) charts.push({ id: `customer-${s.id}`, node: body, option: chartOption(s, lang) });
      else body = el('div', { class: 'muted empty' }, t(lang, 'noData'));
    } else {
      if (timelineShown) continue;
      timelineShown = true;
      cards.push(el('section', { class: 'panel customer-section wide', dataset: { section: 'timeline' } },
        el('h2', {}, t(lang, 'timeline')),
        timeline(profile, lang)));
      continue;
    }
    const at = s.at ? el('span', { class: 'muted section-at' }, `${t(lang, 'asOf')} ${s.at}`) : null;
    const more = s.truncated ? el('div', { class: 'muted' }, t(lang, 'latestRows', { n: s.rows.length })) : null;
    cards.push(el('section', {
      class: `panel customer-section${s.show === 'chart' ? ' wide' : ''}`,
      dataset: { section: s.id },
    }, el('h2', {}, label(s.label, lang, s.id), at), body, more));
  }
  return { nodes: cards, charts };
}

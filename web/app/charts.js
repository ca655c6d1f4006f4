// ECharts options for each panel kind, built from a query result ({schema, rows}). Colors and
// number formats come from the metric definitions in the result's schema.

import { formatValue, formatPeriod } from './format.js';
import { label, valueText } from './i18n.js';

export const PALETTE = ['#1f5fbf', '#f0a020', '#2a9d8f', '#c8553d', '#7b5ea7', '#5c7080', '#88b04b', '#e377c2'];

export function column(result, name) {
  return result.schema.findIndex((f) => f.name === name);
}

export function field(result, name) {
  return result.schema.find((f) => f.name === name) ?? { name, label: {} };
}

/** Distinct values of a column, in first-seen order. */
function distinct(rows, i) {
  const seen = new Set();
  for (const r of rows) seen.add(r[i]);
  return [...seen];
}

function tooltip(fmt) {
  return {
    trigger: 'axis',
    axisPointer: { type: 'shadow' },
    valueFormatter: (v) => fmt(v),
    confine: true,
  };
}

const base = { color: PALETTE, animationDuration: 300, textStyle: { fontFamily: 'inherit' } };

/** Ranked horizontal bars of one metric by the (drilled) level; warn/alert thresholds drawn. */
export function barOption(panel, result, lang) {
  const dim = result.drill?.level ?? panel.dimensions[0];
  const metric = panel.metrics[0];
  const f = field(result, metric);
  const di = column(result, dim);
  const mi = column(result, metric);
  const fmt = (v) => formatValue(v, f.format, lang);
  const lines = [];
  if (f.thresholds) {
    const mark = (value, color) => ({
      xAxis: value,
      lineStyle: { color },
      label: { position: 'insideEndTop', color, formatter: () => fmt(value) },
    });
    lines.push(mark(f.thresholds.warn, '#d98e04'), mark(f.thresholds.alert, '#c8372d'));
  }
  return {
    ...base,
    grid: { left: 8, right: 64, top: 24, bottom: 8, containLabel: true },
    tooltip: tooltip(fmt),
    xAxis: { type: 'value', axisLabel: { formatter: fmt, hideOverlap: true }, splitLine: { lineStyle: { color: '#eef1f5' } } },
    yAxis: { type: 'category', inverse: true, data: result.rows.map((r) => valueText(field(result, dim).value_labels, r[di], lang)), axisTick: { show: false } },
    series: [{
      type: 'bar',
      name: label(f.label, lang, metric),
      data: result.rows.map((r) => r[mi]),
      barMaxWidth: 22,
      itemStyle: { borderRadius: [0, 3, 3, 0] },
      label: { show: true, position: 'right', formatter: (p) => fmt(p.value) },
      markLine: lines.length ? { symbol: 'none', silent: true, data: lines, lineStyle: { type: 'dashed' } } : undefined,
    }],
  };
}

/** Lines (or areas) over periods: one per metric, or one per member of the dimension. */
export function lineOption(panel, result, lang, area) {
  const pi = column(result, 'period');
  const periods = distinct(result.rows, pi);
  const x = periods.map((p) => formatPeriod(p, panel.grain));
  const first = field(result, panel.metrics[0]);
  const fmt = (v) => formatValue(v, first.format, lang);
  let series;
  if (panel.dimensions.length) {
    const di = column(result, panel.dimensions[0]);
    const mi = column(result, panel.metrics[0]);
    series = distinct(result.rows, di).map((member) => {
      const byPeriod = new Map(result.rows.filter((r) => r[di] === member).map((r) => [r[pi], r[mi]]));
      return { name: valueText(field(result, panel.dimensions[0]).value_labels, member, lang), data: periods.map((p) => byPeriod.get(p) ?? null) };
    });
  } else {
    series = panel.metrics.map((m) => {
      const mi = column(result, m);
      return { name: label(field(result, m).label, lang, m), data: result.rows.map((r) => r[mi]) };
    });
  }
  return {
    ...base,
    grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
    legend: { show: series.length > 1, top: 0, type: 'scroll' },
    tooltip: { ...tooltip(fmt), axisPointer: { type: 'line' } },
    xAxis: { type: 'category', data: x, boundaryGap: false },
    yAxis: { type: 'value', scale: !area, axisLabel: { formatter: fmt, hideOverlap: true }, splitLine: { lineStyle: { color: '#eef1f5' } } },
    series: series.map((s) => ({
      ...s,
      type: 'line',
      smooth: true,
      showSymbol: false,
      areaStyle: area ? { opacity: 0.18 } : undefined,
    })),
  };
}

/** Stacked bars: periods x members of the dimension, or dimension 1 x dimension 2. */
export function stackedOption(panel, result, lang) {
  const metric = panel.metrics[0];
  const f = field(result, metric);
  const fmt = (v) => formatValue(v, f.format, lang);
  const overTime = panel.grain != null;
  const xi = overTime ? column(result, 'period') : column(result, panel.dimensions[0]);
  const si = column(result, overTime ? panel.dimensions[0] : panel.dimensions[1]);
  const mi = column(result, metric);
  const xs = distinct(result.rows, xi);
  const stacks = distinct(result.rows, si);
  const cell = new Map(result.rows.map((r) => [`${r[xi]}\u0000${r[si]}`, r[mi]]));
  const xLabels = overTime ? null : field(result, panel.dimensions[0]).value_labels;
  const stackLabels = field(result, overTime ? panel.dimensions[0] : panel.dimensions[1]).value_labels;
  return {
    ...base,
    grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
    legend: { top: 0, type: 'scroll' },
    tooltip: tooltip(fmt),
    xAxis: { type: 'category', data: xs.map((x) => (overTime ? formatPeriod(x, panel.grain) : valueText(xLabels, x, lang))) },
    yAxis: { type: 'value', axisLabel: { formatter: fmt, hideOverlap: true }, splitLine: { lineStyle: { color: '#eef1f5' } } },
    series: stacks.map((s) => ({
      name: valueText(stackLabels, s, lang),
      type: 'bar',
      stack: 'total',
      barMaxWidth: 28,
      data: xs.map((x) => cell.get(`${x}\u0000${s}`) ?? null),
    })),
  };
}

/** A funnel of entities per step, each labelled with its conversion from the step before. */
export function funnelOption(panel, result, lang) {
  const si = column(result, 'step');
  const oi = column(result, 'step_order');
  const vi = column(result, panel.metrics[0]);
  const ci = column(result, 'step_conversion');
  const rows = [...result.rows].sort((a, b) => a[oi] - b[oi]);
  const pct = (v) => formatValue(v, { style: 'percent', decimals: 1 }, lang);
  return {
    ...base,
    tooltip: { trigger: 'item', confine: true },
    series: [{
      type: 'funnel',
      sort: 'none',
      left: '8%',
      width: '84%',
      top: 8,
      bottom: 8,
      minSize: '40%',
      gap: 2,
      label: {
        show: true,
        position: 'inside',
        formatter: (p) => {
          const r = rows[p.dataIndex];
          return r[ci] == null ? `${p.name}  ${p.value}` : `${p.name}  ${p.value}  (${pct(r[ci])})`;
        },
      },
      // A step shows its label from the catalog where one is declared, else its key.
      data: rows.map((r) => ({ name: stepName(result, r[si], lang), value: r[vi] })),
    }],
  };
}

/** A funnel step's label in `lang` (its key where none is declared). */
export function stepName(result, step, lang) {
  return valueText(field(result, 'step').value_labels, step, lang);
}

/** A retention heatmap: cohorts down, periods since joining across. */
export function cohortOption(panel, result, lang) {
  const ci = column(result, 'cohort');
  const ki = column(result, 'periods_since');
  const vi = column(result, panel.metrics[0]);
  const f = field(result, panel.metrics[0]);
  const cohorts = distinct(result.rows, ci);
  const offsets = distinct(result.rows, ki).sort((a, b) => a - b);
  const data = result.rows.map((r) => [offsets.indexOf(r[ki]), cohorts.indexOf(r[ci]), r[vi]]);
  const values = result.rows.map((r) => r[vi]).filter((v) => v != null);
  return {
    ...base,
    grid: { left: 8, right: 16, top: 8, bottom: 48, containLabel: true },
    tooltip: { position: 'top', confine: true, formatter: (p) => `${formatPeriod(cohorts[p.value[1]], 'month')} +${offsets[p.value[0]]}: ${formatValue(p.value[2], f.format, lang)}` },
    xAxis: { type: 'category', data: offsets.map((o) => `+${o}`), splitArea: { show: true } },
    yAxis: { type: 'category', inverse: true, data: cohorts.map((c) => formatPeriod(c, 'month')) },
    visualMap: {
      min: Math.min(...values, 1),
      max: Math.max(...values, 0),
      calculable: false,
      orient: 'horizontal',
      left: 'center',
      bottom: 0,
      itemHeight: 120,
      inRange: { color: ['#fdecea', '#9ecae1', '#1f5fbf'] },
      formatter: (v) => formatValue(v, f.format, lang),
    },
    series: [{
      type: 'heatmap',
      data,
      label: { show: offsets.length <= 13, fontSize: 9, formatter: (p) => formatValue(p.value[2], { style: 'percent', decimals: 0 }, lang) },
    }],
  };
}

export function chartOption(panel, result, lang) {
  switch (panel.type) {
    case 'bar': return barOption(panel, result, lang);
    case 'line': return lineOption(panel, result, lang, false);
    case 'area': return lineOption(panel, result, lang, true);
    case 'stacked_bar': return stackedOption(panel, result, lang);
    case 'funnel': return funnelOption(panel, result, lang);
    case 'cohort': return cohortOption(panel, result, lang);
    default: return null;
  }
}

// The alert strip above the tiles: the alerts firing on the viewer's part of the bank and the
// viewer's open tasks (from `GET /api/v1/alerts` and `GET /api/v1/tasks`, both scoped by the
// server). A failure here never takes the dashboard down with it.

import { api } from './api.js';
import { formatValue } from './format.js';
import { label, t } from './i18n.js';
import { el } from './dom.js';

const SHOWN = 5;


/** The catalog's hierarchies (their levels, top first), fetched once: an alert's path is a
 * member of one of them, whatever the bank calls its levels. */
let hierarchies = null;

/** The deepest member of a path (`{region, branch}` -> the branch), by the levels of the
 * hierarchy holding every level of the path. */
function member(path) {
  const keys = Object.keys(path ?? {});
  if (keys.length === 0) return '';
  const levels = (hierarchies ?? []).find((h) => keys.every((k) => h.levels.includes(k)))?.levels;
  const deepest = levels ? [...levels].reverse().find((l) => keys.includes(l)) : keys[keys.length - 1];
  return String(path[deepest]);
}

function list(kind, items, lang, render) {
  const shown = items.slice(0, SHOWN).map(render);
  const more = items.length > SHOWN ? el('li', { class: 'more' }, t(lang, 'more', { n: items.length - SHOWN })) : null;
  const empty = items.length === 0 ? el('li', { class: 'none' }, t(lang, kind === 'alerts' ? 'noAlerts' : 'noTasks')) : null;
  return el('div', { class: `alert-box ${kind}`, dataset: { count: String(items.length) } },
    el('h2', {}, t(lang, kind), el('span', { class: 'count' }, String(items.length))),
    el('ul', {}, ...shown, more, empty));
}

function alertItem(a, lang) {
  return el('li', { class: `sev-${a.severity}`, dataset: { rule: a.rule, member: member(a.path) } },
    el('span', { class: 'what' }, label(a.label, lang, a.rule)),
    el('span', { class: 'who' }, member(a.path) || t(lang, 'allOrg')),
    el('span', { class: 'value' }, formatValue(a.value, a.format, lang)));
}

function taskItem(task, lang) {
  const detail = Object.values(task.fields ?? {}).filter((v) => v !== null).join(' · ');
  return el('li', { class: `sev-${task.severity}`, dataset: { task: task.id } },
    el('span', { class: 'what' }, label(task.label, lang, task.rule)),
    el('span', { class: 'who' }, `#${task.key}`),
    el('span', { class: 'value' }, detail));
}

/** Fills `node` with the viewer's firing alerts and open tasks. */
export async function renderAlerts(node, lang) {
  try {
    const [alerts, tasks, catalog] = await Promise.all([
      api.firingAlerts(), api.openTasks(), hierarchies ? null : api.catalog(),
    ]);
    hierarchies ??= catalog?.hierarchies ?? [];
    node.replaceChildren(
      list('alerts', alerts.alerts, lang, (a) => alertItem(a, lang)),
      list('tasks', tasks.tasks, lang, (task) => taskItem(task, lang)),
    );
    node.dataset.ready = 'true';
  } catch (e) {
    node.replaceChildren(el('div', { class: 'alert-box unavailable' }, `${t(lang, 'alertsUnavailable')}: ${e.message}`));
    node.dataset.ready = 'error';
  }
}

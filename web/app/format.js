// Numbers as each metric's `format` says: percent, integer, number, currency. Currency in zh is
// written in 万 / 亿 (10^4 / 10^8), in en with K / M / B. Pure functions: the browser test
// imports this module to compare what the page shows with the API's numbers.

const DASH = '—';

function grouped(v, decimals, lang) {
  return v.toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-US', {
    minimumFractionDigits: decimals,
    maximumFractionDigits: decimals,
  });
}

function currencySymbol(code) {
  return !code || code === 'CNY' ? '¥' : `${code} `;
}

/** A compact money amount: ¥76.33亿 / ¥7.63B. */
export function formatCurrency(v, lang, code) {
  const sign = v < 0 ? '-' : '';
  const abs = Math.abs(v);
  const sym = currencySymbol(code);
  const steps = lang === 'zh'
    ? [[1e8, '亿'], [1e4, '万']]
    : [[1e9, 'B'], [1e6, 'M'], [1e3, 'K']];
  for (const [unit, suffix] of steps) {
    if (abs >= unit) return `${sign}${sym}${grouped(abs / unit, 2, lang)}${suffix}`;
  }
  return `${sign}${sym}${grouped(abs, 0, lang)}`;
}

export function formatValue(v, format, lang) {
  if (v === null || v === undefined || Number.isNaN(v)) return DASH;
  const style = format?.style ?? 'number';
  const decimals = format?.decimals;
  switch (style) {
    case 'percent':
      return `${grouped(v * 100, decimals ?? 1, lang)}%`;
    case 'integer':
      return grouped(Math.round(v), 0, lang);
    case 'currency':
      return formatCurrency(v, lang, format?.currency);
    default:
      return grouped(v, decimals ?? 2, lang);
  }
}

/**
 * The change against the previous period: percentage points for percent metrics
 * ("+0.13pp" / "+0.13个百分点"), else the relative change ("+3.64%").
 */
export function formatChange(delta, deltaPct, format, lang) {
  if (format?.style === 'percent') {
    if (delta === null || delta === undefined) return DASH;
    const pp = grouped(Math.abs(delta * 100), 2, lang);
    return `${delta >= 0 ? '+' : '-'}${pp}${lang === 'zh' ? '个百分点' : 'pp'}`;
  }
  if (deltaPct === null || deltaPct === undefined || !Number.isFinite(deltaPct)) return DASH;
  return `${deltaPct >= 0 ? '+' : '-'}${grouped(Math.abs(deltaPct * 100), 1, lang)}%`;
}

/** good / bad / flat: whether a change is welcome, as the metric's direction says. */
export function changeTone(delta, direction) {
  if (delta === null || delta === undefined || delta === 0 || direction === 'neutral') return 'flat';
  const up = delta > 0;
  if (direction === 'lower_is_better') return up ? 'bad' : 'good';
  return up ? 'good' : 'bad';
}

/** A period start as the grain reads: 2025-12 for months, 2025Q4 for quarters. */
export function formatPeriod(iso, grain) {
  if (!iso) return DASH;
  const [y, m] = iso.split('-');
  switch (grain) {
    case 'year': return y;
    case 'quarter': return `${y}Q${Math.floor((Number(m) - 1) / 3) + 1}`;
    case 'month': return `${y}-${m}`;
    default: return iso;
  }
}

// The cockpit's own words in both languages; metric, dimension and dashboard labels come from
// the API (each definition carries zh and en).

const WORDS = {
  zh: {
    product: '决策驾驶舱',
    loading: '加载中…',
    retry: '重试',
    asOf: '数据截至',
    dataLoaded: '数据更新于',
    all: '全部',
    allOrg: '全行',
    vsPrevious: '较上期',
    vs_year_start: '较年初',
    vs_same_period_last_year: '同比',
    status_green: '正常',
    status_amber: '关注',
    status_red: '预警',
    error: '数据加载失败',
    panelError: '该图表加载失败',
    noData: '暂无数据',
    timeline: '客户动态',
    latestRows: '仅显示最近 {n} 条',
    back: '返回',
    openCustomer: '查看客户360度视图',
    rank: '排名',
    change: '较上期',
    page: '第 {page} / {pages} 页，共 {total} 条',
    prev: '上一页',
    next: '下一页',
    rows: '明细',
    export: '导出',
    exportHint: '导出为 Excel',
    clickToDrill: '点击下钻',
    noEcharts: '图表库缺失：--web-dir 目录中缺少 vendor/echarts.min.js',
    language: 'English',
    filters: '筛选',
    viewAs: '查看身份',
    token: '访问令牌',
    signIn: '登录',
    window: '时间范围',
    asOfPick: '截至',
    last_day: '近{n}天',
    last_week: '近{n}周',
    last_month: '近{n}个月',
    last_quarter: '近{n}个季度',
    last_year: '近{n}年',
    alerts: '预警',
    tasks: '我的待办',
    noAlerts: '当前无预警',
    noTasks: '暂无待办',
    more: '另有 {n} 条',
    alertsUnavailable: '预警暂不可用',
  },
  en: {
    product: 'Decision cockpit',
    loading: 'Loading…',
    retry: 'Retry',
    asOf: 'Data as of',
    dataLoaded: 'Data loaded',
    all: 'All',
    allOrg: 'Whole bank',
    vsPrevious: 'vs previous',
    vs_year_start: 'vs year start',
    vs_same_period_last_year: 'vs last year',
    status_green: 'On track',
    status_amber: 'Watch',
    status_red: 'Alert',
    error: 'Could not load the data',
    panelError: 'This panel could not load',
    noData: 'No data',
    timeline: 'Timeline',
    latestRows: 'The latest {n} rows',
    back: 'Back',
    openCustomer: 'Open the customer 360 view',
    rank: 'Rank',
    change: 'Change',
    page: 'Page {page} of {pages}, {total} rows',
    prev: 'Previous',
    next: 'Next',
    rows: 'Rows',
    export: 'Export',
    exportHint: 'Export to Excel',
    clickToDrill: 'Click to drill down',
    noEcharts: 'The chart library is missing: --web-dir has no vendor/echarts.min.js',
    language: '中文',
    filters: 'Filters',
    viewAs: 'Viewing as',
    token: 'Access token',
    signIn: 'Sign in',
    window: 'Window',
    asOfPick: 'As of',
    last_day: 'Last {n} days',
    last_week: 'Last {n} weeks',
    last_month: 'Last {n} months',
    last_quarter: 'Last {n} quarters',
    last_year: 'Last {n} years',
    alerts: 'Alerts',
    tasks: 'My tasks',
    noAlerts: 'No alert is firing',
    noTasks: 'No open tasks',
    more: '{n} more',
    alertsUnavailable: 'Alerts are unavailable',
  },
};

export function t(lang, key, vars = {}) {
  const text = WORDS[lang]?.[key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}

/** A `{zh, en}` label in the reader's language (falling back to the other). */
/** A coded value (码值) as its column's `value_labels` show it in `lang`; else the value itself. */
export function valueText(labels, value, lang) {
  if (value === null || value === undefined) return '—';
  const l = labels?.[value];
  return l ? label(l, lang, String(value)) : String(value);
}

export function label(l, lang, fallback = '') {
  if (!l) return fallback;
  return l[lang] ?? l.en ?? l.zh ?? fallback;
}

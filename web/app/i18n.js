// The cockpit's own words in both languages; metric, dimension and dashboard labels come from
// the API (each definition carries zh and en).

const WORDS = {
  zh: {
    product: '决策驾驶舱',
    loading: '加载中…',
    retry: '重试',
    asOf: '数据截至',
    all: '全部',
    allOrg: '全行',
    vsPrevious: '较上期',
    status_green: '正常',
    status_amber: '关注',
    status_red: '预警',
    error: '数据加载失败',
    panelError: '该图表加载失败',
    noData: '暂无数据',
    rank: '排名',
    change: '较上期',
    page: '第 {page} / {pages} 页，共 {total} 户',
    prev: '上一页',
    next: '下一页',
    customers: '客户明细',
    clickToDrill: '点击下钻',
    noEcharts: '图表库缺失：请运行 npm ci --prefix web',
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
  },
  en: {
    product: 'Decision cockpit',
    loading: 'Loading…',
    retry: 'Retry',
    asOf: 'Data as of',
    all: 'All',
    allOrg: 'Whole bank',
    vsPrevious: 'vs previous',
    status_green: 'On track',
    status_amber: 'Watch',
    status_red: 'Alert',
    error: 'Could not load the data',
    panelError: 'This panel could not load',
    noData: 'No data',
    rank: 'Rank',
    change: 'Change',
    page: 'Page {page} of {pages}, {total} customers',
    prev: 'Previous',
    next: 'Next',
    customers: 'Customers',
    clickToDrill: 'Click to drill down',
    noEcharts: 'The chart library is missing: run npm ci --prefix web',
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
  },
};

export function t(lang, key, vars = {}) {
  const text = WORDS[lang]?.[key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}

/** A `{zh, en}` label in the reader's language (falling back to the other). */
export function label(l, lang, fallback = '') {
  if (!l) return fallback;
  return l[lang] ?? l.en ?? l.zh ?? fallback;
}

// The API calls the cockpit makes. Every failure becomes an Error whose message is the server's
// own (`error.message`), so the page can say what went wrong.

let token = null;

/** The bearer token sent with every data request (the person the cockpit is viewed as). */
export function setToken(t) {
  token = t || null;
}

/** The Authorization header of the current viewer (none when signed out). */
export function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: {
        'Content-Type': 'application/json',
        ...authHeaders(),
        ...(options.headers ?? {}),
      },
    });
  } catch (e) {
    throw new Error(`network error: ${e.message}`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported below with the status
  }
  if (!response.ok) {
    const message = body?.error?.message ?? `HTTP ${response.status}`;
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return body;
}

/** POSTs an export and saves the file it returns under the server's name for it. */
async function download(body) {
  const response = await fetch('/api/v1/export', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...authHeaders() },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json())?.error?.message ?? message;
    } catch {
      // not JSON: the status says it
    }
    throw new Error(message);
  }
  const name = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') ?? '')?.[1] ?? 'kpilens-export';
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

export const api = {
  /** An Excel file of a panel, a drilled view or a list (see `POST /api/v1/export`). */
  exportFile: download,
  /** The demo's people and their tokens; 404 outside the demo. */
  demoUsers: () => request('/api/v1/demo/users'),
  dashboards: () => request('/api/v1/dashboards'),
  /** Definitions only (metrics, dimensions, hierarchies); no token needed. */
  catalog: () => request('/api/v1/catalog'),
  /** `options.signal` aborts it (a newer load replaced it). */
  dashboard: (id, params, options = {}) => {
    const qs = new URLSearchParams(params).toString();
    return request(`/api/v1/dashboards/${encodeURIComponent(id)}${qs ? `?${qs}` : ''}`, options);
  },
  query: (q) => request('/api/v1/query', { method: 'POST', body: JSON.stringify(q) }),
  /** The 360° customer view; 404 for a customer that does not exist or is not the viewer's. */
  customer: (id) => request(`/api/v1/customers/${encodeURIComponent(id)}`),
  drillThrough: (q) => request('/api/v1/drill_through', { method: 'POST', body: JSON.stringify(q) }),
  /** Firing alerts and open tasks within the viewer's scope. */
  firingAlerts: () => request('/api/v1/alerts?state=firing&history=0'),
  openTasks: () => request('/api/v1/tasks?status=open'),
};

// The ingest-emulator dashboard: three views over the admin API, routed by the URL hash.
//   #/                 connectors table
//   #/connectors/{id}  one connector: details, actions, import history chart
//   #/search           Content Search
// Every value from the server is put in the page as text (textContent, append of strings),
// never parsed as HTML: connector names and subjects are written by clients.
'use strict';

(function () {
  const CONNECTORS = '/api/compliance/connectors';
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const view = document.getElementById('view');
  const statusLine = document.getElementById('status');
  // What the last action on a connector page reported ("Imported 3, ..."), shown under its
  // buttons until the next action or view.
  let notice = '';

  // ----- admin API -----

  // Calls the admin API with the session cookie; changes carry the CSRF token. Answers the
  // parsed JSON (null when empty); a Graph error becomes an Error with its message.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') {
      headers['X-CSRF-Token'] = csrfToken;
    }
    const init = { method: method, headers: headers, credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      // The session expired or was signed out elsewhere: back to the sign-in form.
      location.replace('/');
      throw new Error('Signed out.');
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!response.ok) {
      const message = data && data.error && data.error.message;
      throw new Error(message || response.status + ' ' + response.statusText);
    }
    return data;
  }

  // ----- DOM helpers -----

  // An element with attributes and children; strings become text nodes, null is skipped.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  function svg(tag, attributes, ...children) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function table(headings, rows) {
    return el('table', {},
      el('thead', {}, el('tr', {}, ...headings.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, ...rows));
  }

  function showError(error) {
    statusLine.textContent = error ? error.message || String(error) : '';
  }

  function connectorHref(id) {
    return '#/connectors/' + encodeURIComponent(id);
  }

  // ----- formatting -----

  const relative = new Intl.RelativeTimeFormat('en', { numeric: 'always' });
  const UNITS = [
    ['year', 365 * 24 * 3600], ['month', 30 * 24 * 3600], ['week', 7 * 24 * 3600],
    ['day', 24 * 3600], ['hour', 3600], ['minute', 60], ['second', 1],
  ];

  // "2 hours ago", "never".
  function ago(iso) {
    if (!iso) {
      return 'never';
    }
    const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
    if (Math.abs(seconds) < 10) {
      return 'just now';
    }
    for (const [unit, size] of UNITS) {
      if (Math.abs(seconds) >= size) {
        return relative.format(Math.trunc(seconds / size), unit);
      }
    }
    return 'just now';
  }

  function dateTime(iso) {
    return iso ? new Date(iso).toLocaleString() : '';
  }

  // "2 hours ago (11/20/2026, 10:00:00 AM)", or `none`.
  function when(iso, none) {
    return iso ? ago(iso) + ' (' + dateTime(iso) + ')' : none;
  }

  function timeCell(iso) {
    return el('td', iso ? { title: iso } : {}, ago(iso));
  }

  function stateBadge(state) {
    return el('span', { class: 'state state-' + String(state).toLowerCase() }, state);
  }

  // Native connectors (Slack, Pivot, ...) import staged items; partner apps push over EWS.
  function isNative(connector) {
    return connector.kind !== 'partner';
  }

  // ----- connectors table -----

  async function showConnectors() {
    const list = await api('GET', CONNECTORS);
    const connectors = list.value || [];
    const heading = el('h1', {}, 'Connectors');
    if (connectors.length === 0) {
      view.replaceChildren(heading, el('p', {},
        'No connectors yet: create one with POST ' + CONNECTORS + '.'));
      return;
    }
    const rows = connectors.map((c) => el('tr', { 'data-id': c.id },
      el('td', {}, el('a', { href: connectorHref(c.id) }, c.name)),
      el('td', {}, c.kind),
      el('td', {}, stateBadge(c.status.state)),
      timeCell(c.status.lastImportDateTime),
      el('td', { class: 'number' }, c.status.itemsImported),
      el('td', { class: 'number' }, c.status.errors),
      el('td', { class: 'number' }, isNative(c) ? c.pendingItems : '—')));
    view.replaceChildren(heading, table(
      ['Name', 'Kind', 'State', 'Last import', 'Items imported', 'Errors', 'Waiting'], rows));
    view.querySelector('table').id = 'connectors';
  }

  // ----- one connector -----

  async function showConnector(id) {
    const path = CONNECTORS + '/' + encodeURIComponent(id);
    const [connector, history] = await Promise.all([
      api('GET', path),
      api('GET', path + '/history?top=100'),
    ]);
    const s = connector.status;
    const native = isNative(connector);
    const details = el('dl', { class: 'details' },
      ...pair('Kind', connector.kind),
      ...pair('State', stateBadge(s.state)),
      ...pair('Tenant', connector.tenant),
      ...(connector.appId ? pair('App id', connector.appId) : []),
      ...pair('Last import', when(s.lastImportDateTime, 'never')),
      ...(native ? pair('Items waiting', connector.pendingItems) : []),
      ...(native ? pair('Next import', connector.paused ? 'not while paused'
        : when(connector.schedule.nextRunDateTime, 'not scheduled')) : []),
      ...pair('Imports', s.imports),
      ...pair('Items imported', s.itemsImported),
      ...pair('Errors', s.errors),
      ...(s.lastError ? pair('Last error', s.lastError) : []));
    const imports = (history.value || []).slice().reverse();
    view.replaceChildren(
      el('p', {}, el('a', { href: '#/' }, '← Connectors')),
      el('h1', {}, connector.name),
      details,
      actions(connector, path),
      el('p', { id: 'notice', class: 'notice', role: 'status' }, notice),
      el('h2', {}, 'Items per import'),
      chart(imports),
      legend(),
      el('h2', {}, 'Import history'),
      historyTable(imports.slice().reverse()));
  }

  function pair(term, value) {
    return [el('dt', {}, term), el('dd', {}, value)];
  }

  function actions(connector, path) {
    const paused = connector.paused;
    const buttons = [
      button(paused ? 'Resume' : 'Pause', 'pause',
        () => api('PUT', path, { paused: !paused })),
    ];
    if (isNative(connector)) {
      buttons.push(button('Run import now', 'run',
        async () => runSummary(await api('POST', path + '/run'))));
    }
    if (connector.kind === 'partner' && connector.appId) {
      const sps = '/api/tenants/' + encodeURIComponent(connector.tenant) + '/servicePrincipals';
      if (connector.status.state === 'ConsentRevoked') {
        buttons.push(button('Consent to the app', 'consent',
          () => api('POST', sps, { appId: connector.appId })));
      } else {
        buttons.push(button('Revoke consent', 'revoke',
          () => api('DELETE', sps + '/' + encodeURIComponent(connector.appId))));
      }
    }
    const log = el('a', { id: 'log', href: path + '/log', download: '' },
      'Download import log (CSV)');
    return el('p', { class: 'actions' }, ...buttons, log);
  }

  // A button that runs `action`, then shows the view again with what changed and what the
  // action reported (its answer, if a string), or shows the API's error.
  function button(label, id, action) {
    const b = el('button', { type: 'button', id: id }, label);
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        const reported = await action();
        notice = typeof reported === 'string' ? reported : '';
        showError(null);
        await render();
      } catch (e) {
        notice = '';
        const shown = document.getElementById('notice');
        if (shown) {
          shown.textContent = '';
        }
        showError(e);
        b.disabled = false;
      }
    });
    return b;
  }

  // The answer of POST .../run in a line: the import's counts (per participant, as the
  // history's), or that nothing was staged.
  function runSummary(result) {
    const i = result.import;
    if (!i) {
      return 'Nothing was waiting.';
    }
    const left = result.pendingItems ? '; ' + result.pendingItems + ' still waiting' : '';
    return 'Imported ' + i.importedSuccessfully + ', partially ' + i.partiallyImported +
      ', skipped ' + i.skipped + ', failed ' + i.failed + left + '.';
  }

  const SERIES = [
    ['importedSuccessfully', 'imported'],
    ['partiallyImported', 'partial'],
    ['skipped', 'skipped'],
    ['failed', 'failed'],
  ];

  // Stacked bars, one per import, oldest on the left: imported, partial, skipped, failed.
  function chart(imports) {
    const width = 720;
    const height = 240;
    const left = 48;
    const right = 8;
    const top = 10;
    const bottom = 28;
    const plotHeight = height - top - bottom;
    const root = svg('svg', {
      id: 'chart', class: 'chart', viewBox: '0 0 ' + width + ' ' + height,
      role: 'img', 'aria-label': 'Items per import',
    });
    if (imports.length === 0) {
      root.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle' },
        'No imports yet'));
      return root;
    }
    const total = (i) => SERIES.reduce((sum, [field]) => sum + (i[field] || 0), 0);
    const max = Math.max(1, ...imports.map(total));
    const scale = plotHeight / max;
    const slot = (width - left - right) / imports.length;
    const barWidth = Math.max(1, Math.min(40, slot * 0.7));
    root.append(
      svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: top + plotHeight }),
      svg('line', {
        class: 'axis', x1: left, y1: top + plotHeight, x2: width - right, y2: top + plotHeight,
      }),
      svg('text', { class: 'label', x: left - 6, y: top + 10, 'text-anchor': 'end' }, max),
      svg('text', { class: 'label', x: left - 6, y: top + plotHeight, 'text-anchor': 'end' }, 0));
    imports.forEach((i, n) => {
      const x = left + n * slot + (slot - barWidth) / 2;
      let y = top + plotHeight;
      const bar = svg('g', { class: 'bar' });
      bar.append(svg('title', {}, dateTime(i.importCompletionDateTime) + ': ' +
        SERIES.map(([field, name]) => (i[field] || 0) + ' ' + name).join(', ')));
      for (const [field, name] of SERIES) {
        const h = (i[field] || 0) * scale;
        if (h > 0) {
          y -= h;
          bar.append(svg('rect', { class: name, x: x, y: y, width: barWidth, height: h }));
        }
      }
      root.append(bar);
    });
    const first = imports[0].importCompletionDateTime;
    const last = imports[imports.length - 1].importCompletionDateTime;
    root.append(svg('text', { class: 'label', x: left, y: height - 8 }, dateTime(first)));
    if (imports.length > 1) {
      root.append(svg('text', {
        class: 'label', x: width - right, y: height - 8, 'text-anchor': 'end',
      }, dateTime(last)));
    }
    return root;
  }

  function legend() {
    return el('p', { class: 'legend' }, ...SERIES.map(([, name]) =>
      el('span', { class: 'key ' + name }, name)));
  }

  function historyTable(imports) {
    if (imports.length === 0) {
      return el('p', {}, 'No imports yet.');
    }
    const number = (v) => el('td', { class: 'number' }, v);
    const rows = imports.map((i) => el('tr', {},
      el('td', { title: i.importCompletionDateTime }, dateTime(i.importCompletionDateTime)),
      number(i.itemsAvailableFromSource), number(i.itemsAvailableForImport),
      number(i.importedSuccessfully), number(i.partiallyImported), number(i.skipped),
      number(i.failed)));
    return table(['Completed', 'From source', 'For import', 'Imported', 'Partial', 'Skipped',
      'Failed'], rows);
  }

  // ----- Content Search -----

  async function showSearch() {
    const tenants = (await api('GET', '/api/tenants')).value || [];
    const select = el('select', { id: 'tenant', name: 'tenant' }, ...tenants.map((t) =>
      el('option', { value: t.id }, t.displayName + ' (' + (t.domains[0] || t.id) + ')')));
    const query = el('input', {
      id: 'query', name: 'query', type: 'search', size: '48',
      placeholder: 'subject:"quarterly report" AND from:alice@contoso.com',
    });
    const results = el('div', { id: 'results' });
    const form = el('form', { id: 'search', class: 'search' },
      el('label', { for: 'tenant' }, 'Tenant'), select,
      el('label', { for: 'query' }, 'KQL'), query,
      el('button', { type: 'submit' }, 'Search'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        const path = '/api/tenants/' + encodeURIComponent(select.value) + '/search';
        const found = await api('POST', path, { query: query.value });
        showError(null);
        results.replaceChildren(...searchResults(found));
      } catch (e) {
        showError(e);
        results.replaceChildren();
      }
    });
    view.replaceChildren(el('h1', {}, 'Content Search'), form, results);
    query.focus();
  }

  function searchResults(found) {
    const hits = found.hits || [];
    const count = el('p', { id: 'hit-count' },
      found.total + (found.total === 1 ? ' item matches' : ' items match') +
      (hits.length < found.total ? ' (first ' + hits.length + ' shown)' : '') + '.');
    if (hits.length === 0) {
      return [count];
    }
    const rows = hits.map((h) => el('tr', {},
      el('td', {}, h.subject === null || h.subject === undefined ? '(no subject)' : h.subject),
      el('td', {}, h.sender),
      el('td', {}, h.mailbox + ' / ' + h.folder),
      el('td', { title: h.received }, dateTime(h.received))));
    return [count, table(['Subject', 'From', 'Mailbox / folder', 'Received'], rows)];
  }

  // ----- routing -----

  async function render() {
    const route = location.hash.slice(1) || '/';
    const connector = route.match(/^\/connectors\/([^/]+)$/);
    try {
      if (connector) {
        await showConnector(decodeURIComponent(connector[1]));
      } else if (route === '/search') {
        await showSearch();
      } else {
        await showConnectors();
      }
    } catch (e) {
      showError(e);
    }
  }

  async function signOut() {
    try {
      await fetch('/signout', {
        method: 'POST', headers: { 'X-CSRF-Token': csrfToken }, credentials: 'same-origin',
      });
    } finally {
      location.replace('/');
    }
  }

  document.getElementById('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => {
    notice = '';
    showError(null);
    render();
  });
  render();
})();

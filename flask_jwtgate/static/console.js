/* flask-jwtgate admin console: plain JavaScript, no build step, no framework, nothing from another origin.
 *
 * Everything the API returns is written into the page as text (textContent, text nodes), never as markup: the
 * page's Content-Security-Policy enforces Trusted Types, so writing markup from a string would throw here.
 * The admin's token is kept in this tab's sessionStorage (never a cookie) and sent as a bearer token; fetch is told
 * to send no credentials of its own.
 */
(function () {
  'use strict';

  var API = document.body.dataset.api;
  var STORE = 'jwtgate.console.token';
  var NOTICE = 'jwtgate.console.notice';
  var state = {
    token: null, me: null, version: null, keys: {}, runtimeSettings: true, settings: null,
    auditCursor: null, auditNext: null, loaded: {}
  };

  // -- small helpers ---------------------------------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function setText(node, value) {
    node.textContent = value === null || value === undefined ? '' : String(value);
    return node;
  }

  /* el('td', {text: value, class: 'x'}, [children]): attributes are set one by one, text only as text. */
  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (name) {
      var value = props[name];
      if (value === null || value === undefined) return;
      if (name === 'text') setText(node, value);
      else if (name === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(name, String(value));
    });
    (children || []).forEach(function (child) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    });
    return node;
  }

  function clear(node) { node.replaceChildren(); return node; }

  function show(value) {
    if (value === null || value === undefined || value === '') return '—';
    if (Array.isArray(value)) return value.length ? value.join(', ') : '—';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  function pairs(list, entries) {
    clear(list);
    entries.forEach(function (entry) {
      list.append(el('dt', {text: entry[0]}), el('dd', {text: show(entry[1])}));
    });
    return list;
  }

  function problem(reply) {
    return (reply.data && reply.data.error_description) || ('the server answered HTTP ' + reply.status);
  }

  function reasonOf(reply) { return reply.data && reply.data.reason; }

  async function api(method, path, body, raw) {
    var init = {
      method: method,
      headers: {Authorization: 'Bearer ' + state.token, Accept: 'application/json'},
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error'
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    var response;
    try {
      response = await fetch(API + path, init);
    } catch (error) {
      return {status: 0, ok: false, data: {error_description: 'the server cannot be reached'}};
    }
    if (response.status === 401 && state.me !== null) {
      // The token expired or was revoked while the console was open.
      signOut('Your token is no longer accepted (' + response.status + '): sign in again.');
    }
    if (raw) return response;
    var data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    return {status: response.status, ok: response.ok, data: data};
  }

  function query(params) {
    var parts = [];
    Object.keys(params).forEach(function (name) {
      var value = params[name];
      if (value !== null && value !== undefined && value !== '') {
        parts.push(encodeURIComponent(name) + '=' + encodeURIComponent(value));
      }
    });
    return parts.length ? '?' + parts.join('&') : '';
  }

  // -- signing in ------------------------------------------------------------------------------------------------

  async function signIn(candidate) {
    var error = $('signin-error');
    setText(error, '');
    if (!candidate) {
      setText(error, 'Paste an admin token first.');
      return;
    }
    state.token = candidate;
    var who = await api('GET', '/whoami');
    if (!who.ok) {
      refuse(who.status === 401 ? 'This token is not accepted: ' + problem(who) : problem(who));
      return;
    }
    var keys = await api('GET', '/admin/settings/keys');
    if (keys.status === 403 && reasonOf(keys) === 'not_admin') {
      refuse('This token is ' + who.data.username + "'s, who is not in an admin group (JWTGATE_ADMIN_GROUPS): " +
        "the console needs an admin's token.");
      return;
    }
    if (!keys.ok) {
      refuse(problem(keys));
      return;
    }
    sessionStorage.setItem(STORE, candidate);
    $('signin-token').value = '';
    state.me = who.data;
    takeKeys(keys.data);
    setText($('whoami'), 'Signed in as ' + who.data.username + ' (' + (who.data.groups || []).join(', ') + ')');
    $('signin-view').hidden = true;
    $('session').hidden = false;
    $('console-view').hidden = false;
    $('runtime-off').hidden = state.runtimeSettings;
    await loadSettings();
    var wanted = location.hash ? $('tab-' + location.hash.slice(1)) : null;
    selectTab(wanted || tabs[0], true);
  }

  function refuse(message) {
    state.token = null;
    state.me = null;
    sessionStorage.removeItem(STORE);
    setText($('signin-error'), message);
    $('signin-token').focus();
  }

  function signOut(notice) {
    sessionStorage.removeItem(STORE);
    if (notice) sessionStorage.setItem(NOTICE, notice);
    // A fresh page: nothing that was shown (a new token's secret, audit records) stays in the document.
    location.reload();
  }

  function takeKeys(data) {
    state.keys = data.keys || {};
    state.runtimeSettings = data.runtime_settings !== false;
  }

  // -- tabs ------------------------------------------------------------------------------------------------------

  var tabs = Array.prototype.slice.call(document.querySelectorAll('[role="tab"]'));

  function selectTab(tab, focus) {
    tabs.forEach(function (other) {
      var selected = other === tab;
      other.setAttribute('aria-selected', selected ? 'true' : 'false');
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute('aria-controls')).hidden = !selected;
    });
    if (focus) tab.focus();
    var id = tab.id.slice('tab-'.length);
    history.replaceState(null, '', '#' + id);
    loadPanel(id);
  }

  tabs.forEach(function (tab, index) {
    tab.addEventListener('click', function () { selectTab(tab, false); });
    tab.addEventListener('keydown', function (event) {
      var next = null;
      if (event.key === 'ArrowRight') next = tabs[(index + 1) % tabs.length];
      else if (event.key === 'ArrowLeft') next = tabs[(index - 1 + tabs.length) % tabs.length];
      else if (event.key === 'Home') next = tabs[0];
      else if (event.key === 'End') next = tabs[tabs.length - 1];
      if (next) {
        event.preventDefault();
        selectTab(next, true);
      }
    });
  });

  function loadPanel(id) {
    if (id === 'providers') loadProviders();
    else if (id === 'audit') { loadAuditStatus(); if (!state.loaded.audit) loadAudit(null); }
    else if (id === 'tokens') loadTokens();
    else if (id === 'history') { loadLint(); loadProcesses(); loadHistory(); }
  }

  // -- settings forms --------------------------------------------------------------------------------------------

  var forms = Array.prototype.slice.call(document.querySelectorAll('form.settings'));
  var fields = Array.prototype.slice.call(document.querySelectorAll('form.settings .field'));

  function control(field) { return $('f-' + field.dataset.key); }

  function readOnly(field) {
    var meta = state.keys[field.dataset.key];
    return !state.runtimeSettings || (meta ? meta.restart_only : field.dataset.restart === 'yes');
  }

  /* The control's content as text: what is compared to tell whether the admin changed it. */
  function controlText(field) {
    var input = control(field);
    return input.type === 'checkbox' ? String(input.checked) : input.value;
  }

  function fill(field, value) {
    var input = control(field);
    var kind = field.dataset.kind;
    if (kind === 'bool') input.checked = value === true;
    else if (kind === 'lines') input.value = Array.isArray(value) ? value.join('\n') : (value === null ? '' : String(value));
    else if (kind === 'json') input.value = value === null || value === undefined ? '' : JSON.stringify(value, null, 2);
    else if (kind === 'tristate') input.value = value === null || value === undefined ? 'null' : String(value);
    else input.value = value === null || value === undefined ? '' : String(value);
    field.dataset.initial = controlText(field);
  }

  /* The control's value as the API takes it: {value} or {error}. */
  function valueOf(field) {
    var input = control(field);
    var kind = field.dataset.kind;
    var raw = input.value;
    if (kind === 'bool') return {value: input.checked};
    if (kind === 'tristate') return {value: JSON.parse(raw)};
    if (kind === 'lines') {
      var lines = raw.split('\n').map(function (line) { return line.trim(); }).filter(Boolean);
      return {value: lines.length ? lines : (field.dataset.empty === 'list' ? [] : null)};
    }
    if (kind === 'json') {
      if (!raw.trim()) return {value: null};
      try { return {value: JSON.parse(raw)}; } catch (error) { return {error: 'This is not valid JSON: ' + error.message}; }
    }
    if (kind === 'number') {
      if (!raw.trim()) return {value: null};
      var number = Number(raw.trim());
      return Number.isFinite(number) ? {value: number} : {error: 'This must be a number, or empty.'};
    }
    return {value: raw.trim() ? (kind === 'textarea' ? raw : raw.trim()) : null};
  }

  function fieldError(field, message) {
    setText($('e-' + field.dataset.key), message);
    if (message) control(field).setAttribute('aria-invalid', 'true');
    else control(field).removeAttribute('aria-invalid');
  }

  function describeSource(field) {
    var meta = state.keys[field.dataset.key];
    var note = '';
    if (meta) {
      var fallback = JSON.stringify(meta['default']);
      note = {default: 'Default: ' + fallback + '.',
        config: "From the app's configuration; default: " + fallback + '.',
        runtime: "Changed at run time, over the app's configuration; default: " + fallback + '.'}[meta.source] || '';
      if (meta.restart_only) note += " Restart only: set it in the app's configuration and restart.";
    }
    if (!state.runtimeSettings) note += ' Read-only: run-time settings are off.';
    setText($('s-' + field.dataset.key), note.trim());
  }

  /* Show ``data`` (GET /admin/settings); a field the admin is editing keeps the edit unless ``all``. */
  function applySettings(data, all) {
    state.settings = data;
    state.version = data.version;
    fields.forEach(function (field) {
      var key = field.dataset.key;
      var edited = field.dataset.initial !== undefined && controlText(field) !== field.dataset.initial;
      if (all || !edited) {
        fill(field, data[key]);
        fieldError(field, '');
      }
      var input = control(field);
      var locked = readOnly(field);
      if (input.tagName === 'SELECT' || input.type === 'checkbox') input.disabled = locked;
      else input.readOnly = locked;
      describeSource(field);
    });
    forms.forEach(function (form) {
      var editable = Array.prototype.some.call(form.querySelectorAll('.field'), function (f) { return !readOnly(f); });
      form.querySelector('button.save').disabled = !editable;
    });
  }

  async function loadSettings() {
    var reply = await api('GET', '/admin/settings');
    if (!reply.ok) {
      forms.forEach(function (form) { setText(form.querySelector('.status'), problem(reply)); });
      return;
    }
    applySettings(reply.data, true);
    forms.forEach(function (form) {
      setText(form.querySelector('.status'), '');
      form.querySelector('button.reload').hidden = true;
    });
  }

  function pause(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  /* Where each value comes from, as of ``version`` at least: the process that answers may not have applied the
     newest version yet (every process does within 2 seconds), so ask again for a while. */
  async function reloadKeys(version) {
    for (var attempt = 0; attempt < 10; attempt++) {
      var keys = await api('GET', '/admin/settings/keys');
      if (!keys.ok) return;
      takeKeys(keys.data);
      if (version === undefined || keys.data.version >= version) return;
      await pause(300);
    }
  }

  async function save(form) {
    var status = form.querySelector('.status');
    setText(status, '');
    var updates = {};
    var invalid = null;
    Array.prototype.forEach.call(form.querySelectorAll('.field'), function (field) {
      fieldError(field, '');
      if (readOnly(field) || controlText(field) === field.dataset.initial) return;
      var read = valueOf(field);
      if (read.error) {
        fieldError(field, read.error);
        invalid = invalid || field;
        return;
      }
      updates[field.dataset.key] = read.value;
    });
    if (invalid) {
      setText(status, 'Nothing was saved: correct the field marked above.');
      control(invalid).focus();
      return;
    }
    var changed = Object.keys(updates);
    if (!changed.length) {
      setText(status, 'Nothing to save: no setting on this page was changed.');
      return;
    }
    updates.version = state.version;
    var reply = await api('PUT', '/admin/settings', updates);
    if (reply.ok) {
      // The saved fields now show what is in force; fields edited on other pages keep their edits.
      Array.prototype.forEach.call(form.querySelectorAll('.field'), function (field) { delete field.dataset.initial; });
      applySettings(reply.data, false);
      setText(status, 'Saved ' + changed.join(', ') + ': version ' + reply.data.version +
        ' is in force; every process applies it within 2 seconds.');
      await reloadKeys(reply.data.version);
      applySettings(state.settings, false);
      return;
    }
    if (reply.status === 400) {
      var key = String((reply.data && reply.data.parameter) || '').split(/[.[]/)[0];
      var target = fields.filter(function (field) { return field.dataset.key === key; })[0];
      if (target && form.contains(target)) {
        fieldError(target, problem(reply));
        control(target).focus();
        setText(status, 'Nothing was saved: ' + key + ' is not valid.');
      } else {
        setText(status, 'Nothing was saved: ' + problem(reply));
      }
      return;
    }
    if (reply.status === 409) {
      setText(status, 'The settings changed meanwhile (another admin or process saved a newer version). ' +
        'Nothing was saved: reload them, then make your change again.');
      var reload = form.querySelector('button.reload');
      reload.hidden = false;
      reload.focus();
      return;
    }
    if (reply.status === 403 && reasonOf(reply) === 'runtime_settings_off') {
      state.runtimeSettings = false;
      $('runtime-off').hidden = false;
      applySettings(state.settings, false);
    }
    setText(status, 'Nothing was saved: ' + problem(reply));
  }

  forms.forEach(function (form) {
    form.addEventListener('submit', function (event) { event.preventDefault(); save(form); });
    form.querySelector('button.reload').addEventListener('click', async function () {
      await reloadKeys();
      await loadSettings();
      setText(form.querySelector('.status'), 'Reloaded: version ' + state.version + ' is shown.');
    });
  });

  // -- 1. providers ----------------------------------------------------------------------------------------------

  async function loadProviders() {
    var box = $('providers-status');
    var reply = await api('GET', '/admin/providers');
    clear(box);
    if (!reply.ok) {
      box.append(el('p', {class: 'error', text: problem(reply)}));
      return;
    }
    if (!reply.data.providers.length) {
      box.append(el('p', {text: 'No provider is configured: only API tokens, personal access tokens and Basic ' +
        'credentials can be accepted.'}));
    }
    reply.data.providers.forEach(function (p) {
      var kind = {public_key: 'public key (PEM)', jwks: 'JWKS', introspection: 'introspection'}[p.kind] || p.kind;
      var section = el('div', {class: 'provider'}, [el('h4', {text: p.name + ' — ' + kind})]);
      var entries = [['Algorithms', p.algorithms], ['Issuer', p.issuer], ['Audience', p.audience],
        ['Username attribute', p.username_claim], ['Groups attribute', p.groups_claim], ['Leeway (s)', p.leeway]];
      if (p.key) entries.push(['Key', p.key.type], ['Fingerprint', p.key.fingerprint]);
      if (p.jwks) {
        entries.push(['JWKS URL', p.jwks.url], ['Key set', p.jwks.state], ['Fetched', p.jwks.fetched_at],
          ['Fresh until', p.jwks.fresh_until], ['Fetches', p.jwks.fetches], ['Last error', p.jwks.last_error]);
      }
      if (p.introspection) {
        var i = p.introspection;
        entries.push(['Introspection URL', i.url], ['Client id', i.client_id], ['Calls', i.calls],
          ['Last call', i.last_call_at], ['Last error', i.last_error],
          ['Cached answers', i.cached_active === undefined ? null : i.cached_active + ' active, ' +
            i.cached_inactive + ' inactive']);
      }
      section.append(pairs(el('dl', {class: 'pairs'}), entries));
      if (p.jwks && p.jwks.keys.length) {
        var body = el('tbody');
        p.jwks.keys.forEach(function (k) {
          body.append(el('tr', {}, [el('td', {text: show(k.kid)}), el('td', {text: show(k.algorithms)}),
            el('td', {text: k.type}), el('td', {text: k.fingerprint})]));
        });
        section.append(el('table', {}, [el('caption', {text: 'Keys in the set'}),
          el('thead', {}, [el('tr', {}, ['Key id', 'Algorithms', 'Type', 'Fingerprint'].map(function (h) {
            return el('th', {scope: 'col', text: h});
          }))]), body]));
      }
      box.append(section);
    });
  }

  $('providers-refresh').addEventListener('click', loadProviders);

  // -- 2. Test Token ---------------------------------------------------------------------------------------------

  $('test-token-form').addEventListener('submit', async function (event) {
    event.preventDefault();
    setText($('tt-error'), '');
    var body = {token: $('tt-token').value.trim(), method: $('tt-method').value, path: $('tt-path').value.trim() || '/'};
    if ($('tt-ip').value.trim()) body.ip = $('tt-ip').value.trim();
    if (!body.token) {
      setText($('tt-error'), 'Paste a token to test.');
      return;
    }
    var reply = await api('POST', '/admin/test-token', body);
    if (!reply.ok) {
      setText($('tt-error'), problem(reply));
      $('tt-result').hidden = true;
      return;
    }
    var report = reply.data;
    var verdict = $('tt-verdict');
    var decision = report.decision || {};
    setText(verdict, 'Token valid: ' + (report.valid ? 'yes' : 'no') + '. ' + report.request.method + ' ' +
      report.request.path + ': ' + (report.allowed ? 'allowed' : 'refused (' + [decision.status, decision.error,
      decision.reason].filter(Boolean).join(' ') + ')') + '.');
    verdict.className = 'verdict ' + (report.allowed ? 'allowed' : 'refused');
    var who = report.identity;
    pairs($('tt-identity'), [['Token', report.token.kind + ', ' + report.token.length + ' characters, ' +
      report.token.fingerprint]].concat(who ? [['User', who.username], ['Groups', who.groups],
      ['Authenticated by', who.auth_method], ['Provider', who.provider], ['Token id', who.token_id]] : []));
    var rows = clear($('tt-checks').tBodies[0]);
    report.checks.forEach(function (check) {
      rows.append(el('tr', {class: 'outcome-' + String(check.outcome).replace(/[^a-z]+/g, '-')}, [
        el('th', {scope: 'row', text: check.step}), el('td', {text: check.outcome}), el('td', {text: check.detail})]));
    });
    $('tt-result').hidden = false;
  });

  // -- 7. audit logs ---------------------------------------------------------------------------------------------

  function auditFilters() {
    var form = $('audit-filter');
    var params = {};
    ['user', 'status', 'decision', 'reason', 'path', 'since', 'until'].forEach(function (name) {
      params[name] = form.elements[name].value.trim();
    });
    return params;
  }

  async function loadAuditStatus() {
    var reply = await api('GET', '/admin/audit/status');
    if (!reply.ok) {
      setText($('audit-status'), problem(reply));
      return;
    }
    var s = reply.data;
    var r = s.retention || {};
    setText($('audit-status'), (s.records === null ? 'The number of records is unknown' : s.records + ' records') +
      ' in ' + (s.database || 'the database') + '. Kept: ' +
      (r.retention_days ? r.retention_days + ' days' : 'for ever') + ', ' +
      (r.max_entries ? 'at most ' + r.max_entries + ' records' : 'no cap') + '; ' +
      (r.prune_interval ? 'pruned every ' + r.prune_interval + ' s.' : 'pruned only by hand.'));
  }

  async function loadAudit(cursor) {
    setText($('audit-error'), '');
    var params = auditFilters();
    params.limit = $('audit-filter').elements.limit.value;
    params.cursor = cursor;
    var reply = await api('GET', '/admin/audit' + query(params));
    if (!reply.ok) {
      setText($('audit-error'), problem(reply));
      return;
    }
    state.loaded.audit = true;
    state.auditCursor = cursor;
    state.auditNext = reply.data.next_cursor;
    var rows = clear($('audit-table').tBodies[0]);
    if (!reply.data.entries.length) {
      rows.append(el('tr', {}, [el('td', {colspan: 9, text: 'No record matches.'})]));
    }
    reply.data.entries.forEach(function (e) {
      var time = String(e.time || '').replace('T', ' ').replace(/\.\d+Z$/, 'Z');
      rows.append(el('tr', {class: 'decision-' + e.decision}, [el('td', {class: 'time', text: time})].concat(
        [e.username, e.method, e.path, e.status, e.decision, e.reason, e.client_address, e.detail].map(
          function (value) { return el('td', {text: show(value)}); }))));
    });
    $('audit-next').disabled = !state.auditNext;
    $('audit-first').disabled = !cursor;
  }

  $('audit-filter').addEventListener('submit', function (event) { event.preventDefault(); loadAudit(null); });
  $('audit-next').addEventListener('click', function () { if (state.auditNext) loadAudit(state.auditNext); });
  $('audit-first').addEventListener('click', function () { loadAudit(null); });

  $('audit-export').addEventListener('click', async function () {
    setText($('audit-error'), '');
    var params = auditFilters();
    params.format = 'csv';
    var response = await api('GET', '/admin/audit' + query(params), undefined, true);
    if (!response.ok) {
      var data = null;
      try { data = await response.json(); } catch (error) { data = null; }
      setText($('audit-error'), problem({status: response.status, data: data}));
      return;
    }
    // Fetched with the bearer token, handed to the browser as a file: no link that would need a cookie.
    var url = URL.createObjectURL(await response.blob());
    var link = el('a', {href: url, download: 'jwtgate-audit.csv'});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  });

  $('audit-prune').addEventListener('click', async function () {
    var result = $('audit-prune-result');
    setText(result, 'Pruning…');
    var reply = await api('POST', '/admin/audit/prune');
    if (!reply.ok) {
      setText(result, problem(reply));
      return;
    }
    setText(result, 'Deleted ' + reply.data.deleted + ' records (' + reply.data.deleted_by_age + ' by age, ' +
      reply.data.deleted_by_count + ' by count).');
    loadAuditStatus();
  });

  // -- 8. API tokens ---------------------------------------------------------------------------------------------

  function tokenState(token) {
    if (token.revoked_at) return 'revoked';
    if (token.expires_at && new Date(token.expires_at) < new Date()) return 'expired';
    return 'active';
  }

  async function loadTokens() {
    setText($('tokens-error'), '');
    var mine = $('tokens-mine').checked;
    var reply = await api('GET', '/tokens' + query({username: mine ? state.me.username : ''}));
    if (!reply.ok) {
      setText($('tokens-error'), problem(reply));
      return;
    }
    var tokens = reply.data.tokens.slice().sort(function (a, b) {
      return String(b.created_at).localeCompare(String(a.created_at));
    });
    var rows = clear($('tokens-table').tBodies[0]);
    if (!tokens.length) rows.append(el('tr', {}, [el('td', {colspan: 9, text: 'No token.'})]));
    tokens.forEach(function (token) {
      var status = tokenState(token);
      var action = el('td');
      if (status === 'active') {
        action.append(el('button', {type: 'button', class: 'secondary', 'aria-label': 'Revoke token ' + token.name +
          ' (' + token.id + ')', text: 'Revoke', onclick: function () { revoke(token); }}));
      }
      rows.append(el('tr', {'data-token-id': token.id}, [
        el('td', {text: token.name}), el('td', {class: 'mono', text: token.id}),
        el('td', {text: token.username + (token.provider ? ' (' + token.provider + ')' : '')}),
        el('td', {text: show(token.groups) + (token.read_only ? ' (read-only)' : '')}),
        el('td', {text: show(token.created_at)}), el('td', {text: show(token.expires_at)}),
        el('td', {text: show(token.last_used_at)}), el('td', {text: status}), action]));
    });
  }

  async function revoke(token) {
    var reply = await api('DELETE', '/tokens/' + encodeURIComponent(token.id));
    if (!reply.ok) {
      setText($('tokens-error'), problem(reply));
      return;
    }
    await loadTokens();
    setText($('tokens-error'), '');
    $('tokens-title').focus();
  }

  $('tokens-title').tabIndex = -1;
  $('tokens-mine').addEventListener('change', loadTokens);

  $('token-form').addEventListener('submit', async function (event) {
    event.preventDefault();
    setText($('tk-error'), '');
    var days = $('tk-days').value.trim();
    var body = {name: $('tk-name').value.trim(), expires_in_days: days && /^\d+$/.test(days) ? Number(days) : days};
    if ($('tk-username').value.trim()) body.username = $('tk-username').value.trim();
    if ($('tk-provider').value.trim()) body.provider = $('tk-provider').value.trim();
    var groups = $('tk-groups').value.split('\n').map(function (g) { return g.trim(); }).filter(Boolean);
    if (groups.length) body.groups = groups;
    var reply = await api('POST', '/tokens', body);
    if (!reply.ok) {
      setText($('tk-error'), problem(reply));
      return;
    }
    setText($('tk-secret-value'), reply.data.token);
    $('tk-secret').hidden = false;
    $('tk-name').value = '';
    $('tk-secret-done').focus();
    loadTokens();
  });

  $('tk-secret-done').addEventListener('click', function () {
    setText($('tk-secret-value'), '');
    $('tk-secret').hidden = true;
    $('tk-name').focus();
  });

  // -- 9. history, processes and the lint ------------------------------------------------------------------------

  async function loadLint() {
    var list = clear($('lint-list'));
    var reply = await api('GET', '/admin/lint');
    if (!reply.ok) {
      list.append(el('li', {class: 'error', text: problem(reply)}));
      return;
    }
    if (!reply.data.findings.length) list.append(el('li', {class: 'ok', text: 'Nothing to report.'}));
    reply.data.findings.forEach(function (f) {
      list.append(el('li', {'data-code': f.code}, [el('code', {text: f.key}), ': ', f.message]));
    });
  }

  async function loadProcesses() {
    var reply = await api('GET', '/admin/settings/status');
    var rows = clear($('processes-table').tBodies[0]);
    if (!reply.ok) {
      setText($('processes-summary'), problem(reply));
      return;
    }
    var s = reply.data;
    setText($('processes-summary'), !s.runtime_settings
      ? "Run-time settings are off: every process runs the app's configuration alone."
      : 'This process (' + s.process + ') runs version ' + s.version +
        (s.error ? '; it cannot apply a newer one: ' + s.error : '') + '.');
    s.processes.forEach(function (p) {
      rows.append(el('tr', {}, [p.process, p.version, p.applied_at, p.seen_at, p.error].map(function (value) {
        return el('td', {text: show(value)});
      })));
    });
  }

  async function loadHistory() {
    var reply = await api('GET', '/admin/settings/history' + query({limit: 50}));
    var rows = clear($('history-table').tBodies[0]);
    if (!reply.ok) {
      setText($('history-status'), problem(reply));
      return;
    }
    $('revert-0').disabled = !state.runtimeSettings;
    if (!reply.data.versions.length) {
      rows.append(el('tr', {}, [el('td', {colspan: 5, text: "No change yet: the app's configuration is in force."})]));
    }
    reply.data.versions.forEach(function (v) {
      var changes = el('ul');
      v.changes.forEach(function (c) {
        changes.append(el('li', {}, [el('code', {text: c.key}), ': ' + JSON.stringify(c.old) + ' → ' +
          JSON.stringify(c['new'])]));
      });
      if (v.reverted_to !== null) changes.prepend(el('li', {text: 'Restored version ' + v.reverted_to + '.'}));
      var action = el('td');
      if (v.version !== reply.data.version && state.runtimeSettings) {
        action.append(el('button', {type: 'button', class: 'secondary', text: 'Restore',
          'aria-label': 'Restore version ' + v.version, onclick: function () { revert(v.version); }}));
      }
      rows.append(el('tr', {'data-version': v.version}, [el('td', {text: v.version}), el('td', {text: v.changed_at}),
        el('td', {text: show(v.changed_by)}), el('td', {}, [changes]), action]));
    });
  }

  async function revert(version) {
    var status = $('history-status');
    var reply = await api('POST', '/admin/settings/revert', {version: version});
    if (!reply.ok) {
      setText(status, 'Not restored: ' + problem(reply));
      return;
    }
    applySettings(reply.data, true);
    setText(status, 'Version ' + reply.data.version + ' (the settings of version ' + version + ') is in force; ' +
      'every process applies it within 2 seconds.');
    await reloadKeys(reply.data.version);
    applySettings(state.settings, false);
    loadHistory();
    loadProcesses();
    loadLint();
  }

  $('revert-0').addEventListener('click', function () { revert(0); });

  // -- start -----------------------------------------------------------------------------------------------------

  $('signin-form').addEventListener('submit', function (event) {
    event.preventDefault();
    signIn($('signin-token').value.trim());
  });
  $('signout').addEventListener('click', function () { signOut(null); });

  var notice = sessionStorage.getItem(NOTICE);
  sessionStorage.removeItem(NOTICE);
  if (notice) setText($('signin-error'), notice);
  var kept = sessionStorage.getItem(STORE);
  if (kept) signIn(kept);
  else $('signin-token').focus();
}());

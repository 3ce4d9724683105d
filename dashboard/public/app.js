/*
 * The dashboard page: plain JS, no bundler, no network but its own server.
 * State arrives pushed over server-sent events (/api/events): `topology`
 * (the whole registry and coordination state), `leases` (TTLs read again),
 * `traffic` (after each scrape), `timeline` (new events). Renders are
 * batched to one per animation frame, and the endpoint table is updated in
 * place, keyed by etcd key, so a registry of thousands stays responsive.
 * Every text from etcd goes in through textContent, never as HTML.
 */
(function () {
  'use strict';
  var state = { topo: null, leases: {}, traffic: null, timeline: [], offset: 0, connected: false };
  var dirty = { topo: false, traffic: false, timeline: false };
  var rows = new Map(); // endpoint key -> { tr, sig, ttlCell, lease }
  var charts = { rps: null, p99: null, names: '' };
  var perf = { firstDataAt: null, firstShownMs: null, firstRenderMs: null, firstFrameMs: null, firstRenderAt: null, renders: 0, lastRenderMs: null };
  window.__dash = { state: state, perf: perf, charts: charts };
  var frame = 0;

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  // Text from etcd can be any length: shown cut (with an ellipsis), whole in the title (on hover).
  var CUT = 300;
  function cut(text) { return text.length > CUT ? text.slice(0, CUT) + '…' : text; }
  function titled(e, text) {
    if (e.title !== text) e.title = text;
    return e;
  }
  function serverNow() { return Date.now() + state.offset; }
  /** `SERVING ×2, NOT_SERVING ×1`: how many scraped clients see each health-check state. */
  function healthText(h) {
    var keys = Object.keys(h || {}).sort();
    if (!keys.length) return '-';
    return keys.map(function (k) { return k + ' \u00d7' + h[k]; }).join(', ');
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function ttlText(lease) {
    if (!lease) return '-';
    var l = state.leases[lease];
    if (!l) return '…';
    if (l.ttl < 0) return 'expired';
    var left = l.ttl - (serverNow() - l.at) / 1000;
    return left <= 0 ? '0s' : Math.ceil(left) + 's';
  }
  function ttlLow(lease) {
    var l = lease && state.leases[lease];
    return !!l && (l.ttl < 0 || l.ttl - (serverNow() - l.at) / 1000 < Math.max(1, l.granted / 3));
  }

  function setCells(tr, values) {
    for (var i = 0; i < values.length; i++) {
      var td = tr.children[i] || tr.appendChild(el('span'));
      if (td.textContent !== values[i]) td.textContent = values[i];
      if (i !== 5) titled(td, values[i]);
    }
  }

  function renderEndpoints() {
    var topo = state.topo;
    var tbody = $('endpoint-rows');
    var seen = new Set();
    var order = [];
    var added = 0;
    var count = 0;
    topo.services.forEach(function (s) {
      s.endpoints.forEach(function (e) {
        count++;
        seen.add(e.key);
        var vals = [s.name, e.addr, String(e.weight), e.zone || '-', e.lease || '-', ttlText(e.lease), e.metrics || '-'];
        var sig = vals.slice(0, 5).join('\u0000') + '\u0000' + vals[6];
        var r = rows.get(e.key);
        if (!r) {
          var tr = el('div', null, 'row endpoint');
          tr.dataset.key = e.key;
          tr.dataset.addr = e.addr;
          // Every cell but the TTL (which counts down) carries its whole text as its title.
          for (var i = 0; i < vals.length; i++) {
            var cell = tr.appendChild(el('span', vals[i], i === 2 || i === 5 ? 'num' + (i === 5 ? ' ttl' : '') : undefined));
            if (i !== 5) cell.title = vals[i];
          }
          r = { tr: tr, sig: sig, ttlCell: tr.children[5], lease: e.lease };
          rows.set(e.key, r);
          if (perf.firstRenderAt !== null) {
            // A joiner is highlighted for a few seconds.
            tr.classList.add('fresh');
            setTimeout(function (row) { row.classList.remove('fresh'); }, 4000, tr);
          }
          added++;
        } else if (r.sig !== sig) {
          setCells(r.tr, vals);
          r.sig = sig;
          r.lease = e.lease;
        }
        order.push(r.tr);
      });
    });
    rows.forEach(function (r, key) {
      if (!seen.has(key)) {
        r.tr.remove();
        rows.delete(key);
      }
    });
    // Rows keep their place unless someone joined: then one pass puts them in key order.
    if (added) {
      var frag = document.createDocumentFragment();
      order.forEach(function (tr) { frag.appendChild(tr); });
      tbody.appendChild(frag);
    }
    $('endpoint-count').textContent = count + ' endpoint' + (count === 1 ? '' : 's') + ' in ' + topo.services.length + ' service' + (topo.services.length === 1 ? '' : 's') + ' under ' + topo.prefix + '/' + (topo.service ? topo.service + '/' : '');
    var invalid = topo.invalid.length ? topo.invalid.length + ' registry record(s) skipped: ' + topo.invalid.slice(0, 5).map(function (i) { return i.key + ' (' + i.reason + ')'; }).join('; ') : '';
    $('invalid').textContent = cut(invalid);
    titled($('invalid'), invalid);
  }

  function fillTable(id, list, cells) {
    var tbody = $(id).tBodies[0];
    var frag = document.createDocumentFragment();
    list.forEach(function (x) {
      var tr = el('tr');
      cells(x).forEach(function (c, i) { tr.appendChild(el('td', c, typeof c === 'number' || i === 3 ? 'num' : undefined)).title = String(c); });
      frag.appendChild(tr);
    });
    tbody.replaceChildren(frag);
  }

  function renderCoordination() {
    var t = state.topo;
    fillTable('elections', t.elections, function (h) { return [h.name, h.value, h.lease, ttlText(h.lease), h.behind + 1]; });
    fillTable('locks', t.locks, function (h) { return [h.name, h.key, h.lease, ttlText(h.lease), h.behind]; });
    fillTable('queues', t.queues, function (q) { return [q.name, q.depth, q.claimed]; });
    var w = t.watches;
    $('coordination-note').textContent = w.coordination === 'DENIED' ? 'elections, locks and queues: this etcd user may not read them' : w.coordination !== 'WATCHING' ? 'coordination watch: ' + w.coordination : '';
    $('meta').textContent = 'revision ' + t.revision + ' · registry watch ' + w.registry;
    renderStatus();
  }

  // The header says whether what is shown is current: the page's stream to the dashboard, then the dashboard's to etcd.
  function renderStatus() {
    var status = $('status');
    var reg = state.topo && state.topo.registry;
    var text = 'live';
    var cls = 'status live';
    if (!state.connected) {
      text = 'reconnecting…';
      cls = 'status down';
    } else if (reg && reg.state === 'stale') {
      text = 'stale: etcd has not answered since ' + new Date(reg.staleSince - state.offset).toLocaleTimeString() + (reg.error ? ' (' + reg.error + ')' : '') + '; showing the registry as it was';
      cls = 'status stale';
    }
    if (status.textContent !== text) status.textContent = text;
    if (status.className !== cls) status.className = cls;
  }

  var palette = ['#0f62fe', '#24a148', '#da1e28', '#8a3ffc', '#ff832b', '#007d79', '#d02670', '#6f6f6f', '#b28600', '#1192e8'];
  function makeChart(target, title, unit, names, data) {
    var width = Math.max(320, $(target).parentElement.clientWidth - 8);
    var series = [{}].concat(names.map(function (n, i) { return { label: n, stroke: palette[i % palette.length], width: 1.5, spanGaps: false }; }));
    return new uPlot({ title: title, width: width, height: 190, series: series, scales: { x: { time: true } }, axes: [{}, { label: unit }], legend: { live: false } }, data, $(target));
  }

  function renderTraffic() {
    var tr = state.traffic;
    var s = tr.series;
    var names = s.backends.join('\u0000');
    var top = s.backends.length > 10 ? 10 : s.backends.length;
    var shown = s.backends.slice(0, top);
    var rpsData = [s.t].concat(s.rps.slice(0, top));
    var p99Data = [s.t].concat(s.p99Ms.slice(0, top));
    if (!charts.rps || charts.names !== names) {
      if (charts.rps) charts.rps.destroy();
      if (charts.p99) charts.p99.destroy();
      charts.rps = makeChart('chart-rps', 'calls/s per backend', 'calls/s', shown, rpsData);
      charts.p99 = makeChart('chart-p99', 'p99 latency per backend (server side)', 'ms', shown, p99Data);
      charts.names = names;
    } else {
      charts.rps.setData(rpsData);
      charts.p99.setData(p99Data);
    }
    fillTable('traffic', tr.backends, function (b) {
      return [b.backend, (b.share * 100).toFixed(1) + '%', b.rps.toFixed(1), b.p50Ms === null ? '-' : b.p50Ms.toFixed(2), b.p99Ms === null ? '-' : b.p99Ms.toFixed(2), healthText(b.health), b.ejectedBy ? String(b.ejectedBy) : '-'];
    });
    fillTable('xds-clients', tr.xdsClients || [], function (c) {
      return [c.nodeId || '-', c.userAgent || '-', c.subscribed || '-', c.ackedVersion || '-', c.lastNack || '-'];
    });
    $('traffic-note').textContent = 'last ' + tr.summaryS + ' s in the table, ' + tr.windowS + ' s in the charts';
    $('targets').textContent = targetsNote(tr);
  }

  // Which /metrics are read, the failing ones first (at most 20 named), and what the limits left out.
  var SHOWN_TARGETS = 20;
  function targetsNote(tr) {
    var list = tr.targets.slice().sort(function (a, b) { return (a.ok === b.ok ? 0 : a.ok ? 1 : -1); });
    var failing = list.filter(function (t) { return !t.ok; }).length;
    var text = list.length
      ? 'scraping ' + list.length + ' /metrics' + (failing ? ' (' + failing + ' failing, retried with back-off)' : '') + ': ' +
        list.slice(0, SHOWN_TARGETS).map(function (t) { return t.addr + ' (' + t.kind + (t.ok ? '' : ', failing: ' + t.error) + ')'; }).join(', ') +
        (list.length > SHOWN_TARGETS ? ', … ' + (list.length - SHOWN_TARGETS) + ' more' : '')
      : 'no /metrics to scrape: start servers with --metrics, or pass --scrape HOST:PORT';
    var n = tr.notScraped;
    var left = [];
    if (n && n.overCap) left.push(n.overCap + ' over the cap of ' + tr.limits.maxTargets);
    if (n && n.byPolicy) left.push(n.byPolicy + ' refused by --scrape-registry ' + tr.limits.registry);
    if (n && n.invalid) left.push(n.invalid + ' not host:port');
    return text + (left.length ? '. Not scraped, of those the registry names: ' + left.join(', ') + '.' : '');
  }

  function renderTimeline() {
    var ol = $('timeline');
    var items = state.timeline.slice(-200).reverse();
    var frag = document.createDocumentFragment();
    items.forEach(function (ev) {
      var li = el('li', null, 'k-' + ev.kind);
      li.appendChild(el('time', new Date(ev.at - state.offset).toLocaleTimeString()));
      li.appendChild(document.createTextNode(cut(ev.text)));
      li.title = ev.text;
      frag.appendChild(li);
    });
    ol.replaceChildren(frag);
  }

  function render() {
    frame = 0;
    var t0 = performance.now();
    // Charts first: uPlot reads its container's width (a layout), which is
    // cheap before the endpoint table changes and costly right after.
    if (dirty.traffic && state.traffic) renderTraffic();
    if (dirty.timeline) renderTimeline();
    var t1 = performance.now();
    var hadTopo = dirty.topo && state.topo;
    if (hadTopo) {
      renderEndpoints();
      renderCoordination();
    }
    dirty.topo = dirty.traffic = dirty.timeline = false;
    var t2 = performance.now();
    perf.renders++;
    perf.lastRenderMs = t2 - t0;
    if (hadTopo && perf.firstRenderAt === null) {
      // The first full render of the topology: building every endpoint row.
      perf.firstRenderMs = t2 - t1;
      perf.firstFrameMs = t2 - t0;
      perf.firstRenderAt = t2;
      // The next frame starts once this one is laid out and painted: data in -> rows on screen.
      requestAnimationFrame(function () { perf.firstShownMs = performance.now() - perf.firstDataAt; });
    }
  }

  // TTLs count down on the page between reads: one pass over the TTL cells a second.
  setInterval(function () {
    rows.forEach(function (r) {
      if (!r.lease) return;
      var txt = ttlText(r.lease);
      if (r.ttlCell.textContent !== txt) r.ttlCell.textContent = txt;
      var low = ttlLow(r.lease);
      if (r.ttlCell.classList.contains('low') !== low) r.ttlCell.classList.toggle('low', low);
    });
    if (state.topo && (state.topo.elections.length || state.topo.locks.length)) {
      dirty.topo = true;
      schedule();
    }
  }, 1000);

  function connect() {
    var es = new EventSource('/api/events');
    es.onopen = function () { state.connected = true; renderStatus(); };
    es.onerror = function () { state.connected = false; renderStatus(); };
    es.addEventListener('topology', function (m) {
      if (perf.firstDataAt === null) perf.firstDataAt = performance.now();
      var t = JSON.parse(m.data);
      state.offset = t.now - Date.now();
      state.topo = t;
      state.leases = t.leases;
      dirty.topo = true;
      schedule();
    });
    es.addEventListener('leases', function (m) {
      var d = JSON.parse(m.data);
      state.offset = d.now - Date.now();
      for (var k in d.leases) state.leases[k] = d.leases[k];
      // The TTL tick shows them; nothing else changes.
    });
    es.addEventListener('traffic', function (m) {
      state.traffic = JSON.parse(m.data);
      dirty.traffic = true;
      schedule();
    });
    es.addEventListener('timeline', function (m) {
      var d = JSON.parse(m.data);
      // `reset`: the whole timeline (the first message after a (re)connect); else new events.
      state.timeline = d.reset ? d.events : state.timeline.concat(d.events);
      if (state.timeline.length > 500) state.timeline = state.timeline.slice(-500);
      dirty.timeline = true;
      schedule();
    });
  }
  connect();
})();

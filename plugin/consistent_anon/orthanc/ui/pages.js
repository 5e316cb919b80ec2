/*
 * Consistent anonymization: the plugin's own pages (index.html, frames.html, verify.html), for
 * Orthanc Explorer 2 and any browser. The views are drawn by views.js, the renderer the legacy
 * explorer's panels use too; this script reads the page's address and says where links go.
 *
 * Addresses: frames.html?study=<Orthanc ID> (or ?series=), verify.html?study=<ID> (or ?series=,
 * or ?source=<ID>&anonymized=<ID> for a pair). Every URL is relative to the page, so that the
 * pages work behind a reverse proxy's path prefix: Orthanc's routes are two folders up.
 */
(function () {
  'use strict';

  var V = window.ConsistentAnonViews;
  var el = V.element;
  var BASE = '../..';
  var LEVELS = ['study', 'series'];
  var ROUTES = { patient: 'patients', study: 'studies', series: 'series', instance: 'instances' };
  var LINKS = {
    series: function (id) { return 'frames.html?series=' + encodeURIComponent(id); },
    instance: function (id) { return BASE + '/instances/' + encodeURIComponent(id) + '/simplified-tags'; },
    resource: function (type, id) {
      return LEVELS.indexOf(type) >= 0 ? 'frames.html?' + type + '=' + encodeURIComponent(id)
        : BASE + '/' + ROUTES[type] + '/' + encodeURIComponent(id);
    }
  };
  var CONTEXT = { base: BASE, links: LINKS, current: function () { return true; }, created: function () {} };

  function parameters() {
    var query = new URLSearchParams(window.location.search);
    var level = LEVELS.filter(function (l) { return query.get(l); })[0];
    return { level: level, id: level ? query.get(level) : null,
             source: query.get('source'), anonymized: query.get('anonymized') };
  }

  function content() {
    return document.getElementById('ca-content');
  }

  function missing() {
    V.append(content(), V.noticeView('Give the resource in the address: ?study=<Orthanc ID> or ?series=<Orthanc ID>. ' +
                                     'The landing page opens them.'));
  }

  // --- frames.html: the resource, then its frames ------------------------------------------

  function describe(rows) {
    return el('dl', { 'class': 'ca-resource' }, rows.filter(function (r) { return r[1]; }).map(function (r) {
      return el('div', { 'class': 'ca-fact' }, [el('dt', {}, r[0]), el('dd', { 'data-tag': r[2] }, r[1])]);
    }));
  }

  /** Who and what the resource is: as Orthanc's own study or series page shows it. */
  function resourceFacts(level, id) {
    var path = '/' + ROUTES[level] + '/' + encodeURIComponent(id);
    return V.request(BASE, 'GET', path).then(function (resource) {
      var tags = resource.MainDicomTags || {};
      var study = level === 'study' ? Promise.resolve(resource)
        : V.request(BASE, 'GET', '/studies/' + encodeURIComponent(resource.ParentStudy));
      return study.then(function (parent) {
        var patient = parent.PatientMainDicomTags || {};
        var studyTags = parent.MainDicomTags || {};
        var rows = [['Patient', patient.PatientName, 'PatientName'], ['Patient ID', patient.PatientID, 'PatientID'],
                    ['Study', [studyTags.StudyDate, studyTags.StudyDescription].filter(Boolean).join(' \u00b7 '),
                     'StudyDescription']];
        if (level === 'series') {
          rows.push(['Series', [tags.SeriesNumber, tags.Modality, tags.SeriesDescription].filter(Boolean).join(' \u00b7 '),
                     'SeriesDescription']);
        }
        return describe(rows);
      });
    });
  }

  function framesPage(query) {
    var facts = el('div', { 'class': 'ca-facts' });
    var frames = el('div', { 'class': 'ca-body' });
    V.append(content(), [facts, frames, el('p', {}, el('a', {
      href: 'verify.html?' + query.level + '=' + encodeURIComponent(query.id), id: 'ca-to-verify' },
      'Verify the anonymization of this ' + query.level))]);
    resourceFacts(query.level, query.id).then(function (node) { V.append(facts, node); }, function () {});
    V.showFrames(frames, CONTEXT, query.level, query.id);
  }

  // --- verify.html --------------------------------------------------------------------------

  function verifyPage(query) {
    var body = el('div', { 'class': 'ca-body' });
    V.append(content(), body);
    if (query.source && query.anonymized) {
      V.verifyPair(body, CONTEXT, { Source: query.source, Anonymized: query.anonymized, Here: null }, null);
    } else {
      V.showVerification(body, CONTEXT, query.level, query.id);
    }
  }

  // --- index.html: what the plugin is, its projects, what it did lately ----------------------

  function opener() {
    var input = el('input', { type: 'text', id: 'ca-resource-id', placeholder: 'Orthanc ID of a study or series' });
    var level = el('select', { id: 'ca-resource-level' }, LEVELS.map(function (l) { return el('option', { value: l }, l); }));
    var go = function (page) {
      return function (event) {
        event.preventDefault();
        if (input.value.trim()) {
          window.location.href = page + '?' + level.value + '=' + encodeURIComponent(input.value.trim());
        }
      };
    };
    var frames = el('button', { type: 'button', id: 'ca-open-frames' }, 'Frames of reference');
    var verify = el('button', { type: 'button', id: 'ca-open-verify' }, 'Verify anonymization');
    frames.addEventListener('click', go('frames.html'));
    verify.addEventListener('click', go('verify.html'));
    return el('div', { 'class': 'ca-opener' }, [level, input, frames, verify]);
  }

  function projects(list) {
    return el('ul', { 'class': 'ca-projects' }, list.map(function (project) {
      return el('li', { 'data-project': project.Name }, [project.Name, project.Default ? ' (default)' : '']);
    }));
  }

  function entries(list) {
    if (!list.length) {
      return el('p', { 'class': 'ca-muted ca-no-entries' }, 'No anonymization is recorded yet.');
    }
    var t = V.table(['#', 'Time (UTC)', 'Level', 'Outcome', 'Reason', 'Project', 'Instances', 'Failed', 'As a job'],
                    'ca-entries');
    V.append(t.tBodies[0], list.map(function (e) {
      return el('tr', { 'class': 'ca-entry' }, [e.Sequence, e.Time, e.Level, e.Outcome, e.Reason, e.Project || '',
        e.Instances, e.FailedInstances, e.Asynchronous ? 'yes' : 'no'].map(function (v) { return el('td', {}, String(v)); }));
    }));
    return t;
  }

  function landingPage() {
    var about = el('p', { 'class': 'ca-about' }, 'This Orthanc anonymizes with keyed pseudonyms: the same source gets ' +
      'the same pseudonyms in every call, so anonymized studies keep their relationships (frames of reference, ' +
      'references between series and studies, longitudinal patients). Open a study or series to list its frames ' +
      'of reference, or to verify that its anonymized copy keeps them and holds nothing of the source.');
    var facts = el('div', { 'class': 'ca-overview' }, V.progressView('Reading the plugin\'s settings\u2026').node);
    V.append(content(), [about, V.section('Open a study or series', 'ca-open').box, facts]);
    content().querySelector('.ca-open .ui-body').appendChild(opener());
    V.request('.', 'GET', '/overview.json').then(function (overview) {
      V.append(V.clear(facts), [V.section('Projects', 'ca-projects-section').box,
                                V.section('Latest anonymizations (no resource, no user: see the audit log)',
                                          'ca-entries-section').box]);
      facts.querySelector('.ca-projects-section .ui-body').appendChild(projects(overview.Projects));
      facts.querySelector('.ca-entries-section .ui-body').appendChild(entries(overview.LatestEntries));
    }, function (error) {
      V.append(V.clear(facts), V.noticeView('The plugin\'s settings could not be read: ' + error.message));
    });
  }

  V.ensureStyle(document);
  var query = parameters();
  var page = document.body.getAttribute('data-page');
  if (page === 'index') {
    landingPage();
  } else if (!query.level && !(page === 'verify' && query.source && query.anonymized)) {
    missing();
  } else if (page === 'frames') {
    framesPage(query);
  } else {
    verifyPage(query);
  }
}());

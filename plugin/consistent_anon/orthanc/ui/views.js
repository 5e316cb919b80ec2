/*
 * Consistent anonymization: the one renderer of its views, "Frames of reference" and "Verify
 * anonymization", shared by the panels explorer.js adds to the legacy Orthanc Explorer and by the
 * plugin's own pages (/consistent-anonymization/ui/, opened from Orthanc Explorer 2).
 *
 * Plain DOM, no library: the legacy explorer loads this file from the plugin's route, the pages
 * by a script tag. Every value is written as text (DICOM strings are attacker-controlled input),
 * never as markup, and every link is built from an ID passed through encodeURIComponent. Where
 * the views link to (a series, an instance, a resource) and where Orthanc's routes are (`base`)
 * is the caller's: the legacy explorer and the pages live at different places.
 *
 * Nothing of a source's identifiers is written by the verification view: source frames of
 * reference are named by their series, never by their UID, and leaks say where and what (the
 * source attribute), never the value.
 */
(function (global) {
  'use strict';

  var PLURAL = { study: 'studies', series: 'series' };
  var STYLE = [
    '.ca-panel { margin: 1em 0 0 0; }',
    '.ca-title { display: flex; align-items: center; justify-content: space-between; }',
    '.ca-title h3 { margin: 0; }',
    '.ca-verdict { padding: .7em 1em; margin: .8em 0; border-radius: .6em; color: #fff;',
    '  font-size: 1.25em; font-weight: bold; text-shadow: none; }',
    '.ca-verdict ul { margin: .3em 0 0 0; font-size: .8em; font-weight: normal; }',
    '.ca-clean { background: #2e7d32; }',
    '.ca-not-clean { background: #c62828; }',
    '.ca-progress { padding: .8em 1em; display: flex; align-items: center; gap: .8em; }',
    '.ca-spinner { width: 1.4em; height: 1.4em; border: .25em solid #ccc; border-top-color: #2a6ebb;',
    '  border-radius: 50%; animation: ca-spin 1s linear infinite; }',
    '@keyframes ca-spin { to { transform: rotate(360deg); } }',
    '.ca-section { margin: .8em 0; }',
    '.ca-section > .ui-bar { font-weight: bold; }',
    'table.ca-table { width: 100%; border-collapse: collapse; }',
    'table.ca-table th, table.ca-table td { text-align: left; vertical-align: top; padding: .35em .6em;',
    '  border-bottom: 1px solid #ddd; }',
    'table.ca-table th { font-size: .85em; color: #555; }',
    'table.ca-table tr.ca-problem td { background: #fdecea; }',
    'table.ca-mapping-table td.ca-source { width: 30%; }',
    'table.ca-mapping-table td.ca-one-to-one { width: 12%; }',
    '.ca-uid { font-family: monospace; font-size: .9em; word-break: break-all; }',
    '.ca-series { margin: .15em 0; }',
    '.ca-muted { color: #666; font-size: .9em; }',
    '.ca-yes { color: #2e7d32; font-weight: bold; }',
    '.ca-no { color: #c62828; font-weight: bold; }',
    '.ca-frame .ui-li-divider .ca-uid { font-weight: normal; }'
  ].join('\n');

  // --- building blocks --------------------------------------------------------------------

  /** An element: attributes set as attribute values, children appended as nodes or as text. */
  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (attributes[name] !== undefined && attributes[name] !== null) {
        node.setAttribute(name, String(attributes[name]));
      }
    });
    append(node, children);
    return node;
  }

  function append(node, children) {
    (Array.isArray(children) ? children : [children]).forEach(function (child) {
      if (child === undefined || child === null) {
        return;
      }
      node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
    });
    return node;
  }

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
    return node;
  }

  function ensureStyle(doc) {
    if (!doc.getElementById('consistent-anon-style')) {
      doc.head.appendChild(el('style', { id: 'consistent-anon-style' }, STYLE));
    }
  }

  function plural(count, word) {
    return count + ' ' + word + (count === 1 ? '' : 's');
  }

  function truncated(list, count) {
    return count > list.length ? ' (the first ' + list.length + ' of ' + count + ')' : '';
  }

  function number(series) {
    return series ? parseInt(series.SeriesNumber, 10) || 0 : 0;
  }

  /** "Series 3 · MR · description"; without the description for a source's series, whose free
   *  text the anonymization may have removed for a reason. */
  function seriesLabel(series, withoutText) {
    var parts = ['Series ' + (series.SeriesNumber || '?')];
    if (series.Modality) {
      parts.push(series.Modality);
    }
    if (series.SeriesDescription && !withoutText) {
      parts.push(series.SeriesDescription);
    }
    return parts.join(' \u00b7 ');
  }

  /** Frames in the order of their lowest series number; frames no series lies on come last. */
  function byFirstSeries(frames, numbersOf) {
    var first = function (frame) {
      var numbers = numbersOf(frame);
      return numbers.length ? Math.min.apply(Math, numbers) : Infinity;
    };
    return frames.slice().sort(function (a, b) {
      var x = first(a), y = first(b);
      return x === y ? 0 : (x < y ? -1 : 1);
    });
  }

  function section(title, cls) {
    var content = el('div', { 'class': 'ui-body ui-body-d ui-corner-bottom' });
    var box = el('div', { 'class': 'ca-section ' + (cls || '') },
                 [el('div', { 'class': 'ui-bar ui-bar-c ui-corner-top' }, title), content]);
    return { box: box, content: content };
  }

  function table(headers, cls) {
    return el('table', { 'class': 'ca-table ' + (cls || '') }, [
      el('thead', {}, el('tr', {}, headers.map(function (header) { return el('th', {}, header); }))),
      el('tbody')]);
  }

  function row(cls, cells) {
    return el('tr', { 'class': cls }, cells);
  }

  function cell(content, cls) {
    return el('td', { 'class': cls }, content);
  }

  function progressView(message) {
    var text = el('span', { 'class': 'ca-progress-text' }, message);
    return { node: el('div', { 'class': 'ui-body ui-body-c ui-corner-all ca-progress' },
                      [el('div', { 'class': 'ca-spinner' }), text]), text: text };
  }

  function noticeView(message, theme) {
    return el('div', { 'class': 'ui-body ui-corner-all ca-notice ui-body-' + (theme || 'e') }, el('p', {}, message));
  }

  // --- requests ---------------------------------------------------------------------------

  /** A JSON route of this Orthanc, with the browser's credentials; rejects with the message of
   *  Orthanc's answer (an Error carrying the HTTP status). */
  function request(base, method, path, body) {
    var init = { method: method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    return fetch(base + path, init).then(function (answer) {
      return answer.text().then(function (text) {
        if (answer.ok) {
          return JSON.parse(text);
        }
        var error = new Error(errorOf(answer, text));
        error.status = answer.status;
        throw error;
      });
    }, function () {
      throw new Error('Orthanc could not be reached');
    });
  }

  function errorOf(answer, text) {
    try {
      var parsed = JSON.parse(text);
      if (parsed && parsed.Message) {
        return parsed.Message;
      }
    } catch (ignored) { /* not JSON: fall back to the status */ }
    return 'HTTP ' + answer.status + (answer.statusText ? ' ' + answer.statusText : '');
  }

  // --- Frames of reference ----------------------------------------------------------------

  function seriesItem(series, links) {
    return el('li', { 'class': 'ca-series-item', 'data-series': series.ID },
              el('a', { href: links.series(series.ID) },
                 [el('span', { 'class': 'ca-series-label' }, seriesLabel(series)),
                  el('span', { 'class': 'ui-li-count ca-count' }, String(series.InstancesCount))]));
  }

  function frameList(frame, index, links) {
    var list = el('ul', { 'data-role': 'listview', 'data-inset': 'true', 'data-theme': 'd', 'data-divider-theme': 'b',
                          'class': 'ca-frame', 'data-frame': frame.FrameOfReferenceUID },
                  el('li', { 'data-role': 'list-divider', 'class': 'ca-divider' },
                     [el('span', {}, 'Frame of reference ' + (index + 1) + ': '),
                      el('span', { 'class': 'ca-uid ca-frame-uid' }, frame.FrameOfReferenceUID),
                      el('span', { 'class': 'ui-li-count ca-count' }, plural(frame.InstancesCount, 'instance'))]));
    frame.Series.forEach(function (series) {
      var item = seriesItem(series, links);
      item.classList.add('ca-on');
      list.appendChild(item);
    });
    if (!frame.Series.length) {
      list.appendChild(el('li', { 'class': 'ca-muted' }, 'No series of this resource lies on it.'));
    }
    if (frame.ReferencedBy.length) {
      list.appendChild(el('li', { 'data-role': 'list-divider', 'data-theme': 'c', 'class': 'ca-divider' },
                          'Referring to it without lying on it'));
      frame.ReferencedBy.forEach(function (series) {
        var item = seriesItem(series, links);
        item.classList.add('ca-referring');
        item.setAttribute('data-theme', 'e');
        list.appendChild(item);
      });
    }
    return list;
  }

  function framesView(frames, links) {
    if (!frames.length) {
      return noticeView('No instance here lies on or refers to a frame of reference.', 'c');
    }
    var ordered = byFirstSeries(frames, function (frame) {
      return frame.Series.map(function (s) { return number(s); });
    });
    return el('div', { 'class': 'ca-frames' }, [el('p', { 'class': 'ca-muted' },
      plural(frames.length, 'frame') + ' of reference. Series that refer to a frame without lying on it ' +
      '(structure sets, registrations, segmentations, reports) are listed under it.')]
      .concat(ordered.map(function (frame, i) { return frameList(frame, i, links); })));
  }

  /** Lists the frames of reference of a study or series into `target` (ctx: base, links,
   *  current() false once the target shows something else, created(node) after drawing). */
  function showFrames(target, ctx, level, id) {
    show(target, ctx, progressView('Reading the headers of every instance\u2026').node);
    return request(ctx.base, 'GET', '/' + PLURAL[level] + '/' + encodeURIComponent(id) + '/frames-of-reference')
      .then(function (frames) {
        show(target, ctx, framesView(frames, ctx.links));
      }, function (error) {
        show(target, ctx, noticeView('The frames of reference could not be listed: ' + error.message));
      });
  }

  function show(target, ctx, node) {
    if (ctx.current()) {
      append(clear(target), node);
      ctx.created(target);
    }
  }

  // --- Verify anonymization ---------------------------------------------------------------

  /** The source and the anonymized side for this resource: AnonymizedFrom when it records its
   *  source, else the anonymized copy the plugin made of it (computed by the plugin). Rejects
   *  with null when there is neither, else with the message of the failure. */
  function findPair(base, level, id) {
    var path = '/' + PLURAL[level] + '/' + encodeURIComponent(id);
    return request(base, 'GET', path).then(function (resource) {
      if (resource.AnonymizedFrom) {
        return { Source: resource.AnonymizedFrom, Anonymized: id, Here: 'Anonymized' };
      }
      return request(base, 'GET', path + '/anonymized-counterpart').then(function (counterpart) {
        return { Source: id, Anonymized: counterpart.ID, Here: 'Source' };
      }, function (error) {
        throw error.status === 404 ? null : error.message;
      });
    }, function (error) {
      throw error.message;
    });
  }

  /** Number, modality, description and size of every series the report names (a series that
   *  cannot be read is shown by its count alone). */
  function seriesOf(base, report) {
    var ids = {};
    report.FramesOfReference.forEach(function (frame) {
      frame.SourceSeries.concat(frame.AnonymizedSeries).forEach(function (id) { ids[id] = true; });
    });
    var series = {};
    return Promise.all(Object.keys(ids).map(function (id) {
      return request(base, 'GET', '/series/' + encodeURIComponent(id)).then(function (s) {
        var tags = s.MainDicomTags || {};
        series[id] = { ID: id, SeriesNumber: tags.SeriesNumber, Modality: tags.Modality,
                       SeriesDescription: tags.SeriesDescription, InstancesCount: s.Instances.length };
      }, function () { /* unreadable: shown by its count */ });
    })).then(function () { return series; });
  }

  function problems(report) {
    var list = [];
    var broken = report.UnresolvedReferences.filter(function (r) {
      return r.InSource === 'Resolved' || r.InSource === 'Absent';
    }).length;
    var split = report.FramesOfReference.filter(function (f) { return !f.OneToOne; }).length;
    if (report.LeaksCount) {
      list.push(plural(report.LeaksCount, 'leak') + ' of source identifiers');
    }
    if (broken) {
      list.push(plural(broken, 'reference') + ' broken by the anonymization');
    }
    if (split) {
      list.push(plural(split, 'frame') + ' of reference not mapped one-to-one');
    }
    if (report.InconsistentUids.length) {
      list.push(plural(report.InconsistentUids.length, 'inconsistent UID mapping'));
    }
    if (report.UnpairedSourceInstances.length) {
      list.push(plural(report.UnpairedSourceInstances.length, 'source instance') + ' without an anonymized copy');
    }
    if (report.NotAnonymizedInstancesCount) {
      list.push(plural(report.NotAnonymizedInstancesCount, 'instance') + ' of the anonymized side without a ' +
                'de-identification marker (sides swapped, or not anonymized)');
    }
    return list;
  }

  function verdict(report) {
    if (report.Clean) {
      return el('div', { 'class': 'ca-verdict ca-clean', 'data-clean': 'true' },
                '\u2714 Clean: ' + plural(report.PairedInstancesCount, 'instance') + ' paired, every frame of ' +
                'reference maps one-to-one, every reference resolves, nothing of the source remains.');
    }
    return el('div', { 'class': 'ca-verdict ca-not-clean', 'data-clean': 'false' },
              ['\u2718 Not clean', el('ul', {}, problems(report).map(function (p) { return el('li', {}, p); }))]);
  }

  function sideRow(name, side, here, links) {
    var type = side.Type.toLowerCase();
    var link = el('a', { href: links.resource(type, side.ID) },
                  here ? 'this ' + type : (name === 'Source' ? 'open the source' : 'open the anonymized copy'));
    return row('ca-' + name.toLowerCase() + '-side',
               [cell(name), cell(side.Type), cell(String(side.InstancesCount)), cell(link)]);
  }

  function summary(pair, report, links) {
    var paired = report.PairedBy;
    var s = section('Sets compared', 'ca-summary');
    var t = table(['', 'Type', 'Instances', '']);
    append(t.tBodies[0], [sideRow('Source', report.Source, pair.Here === 'Source', links),
                          sideRow('Anonymized', report.Anonymized, pair.Here === 'Anonymized', links)]);
    append(s.content, [t, el('p', { 'class': 'ca-muted ca-paired' },
      plural(report.PairedInstancesCount, 'instance') + ' paired (' + paired.Pseudonym + ' by the plugin\'s pseudonym, ' +
      paired.AnonymizedFrom + ' by AnonymizedFrom, ' + paired.Attributes + ' by unchanged attributes); ' +
      report.UnpairedSourceInstances.length + ' source and ' + report.UnpairedAnonymizedInstances.length +
      ' anonymized instances unpaired.')]);
    return s.box;
  }

  function seriesLines(ids, series, withoutText, links) {
    return el('div', {}, ids.slice().sort(function (a, b) { return number(series[a]) - number(series[b]); })
      .map(function (id) {
        var known = series[id];
        return el('div', { 'class': 'ca-series', 'data-series': id },
                  el('a', { href: links.series(id) },
                     known ? seriesLabel(known, withoutText) + ' (' + known.InstancesCount + ')' : 'a series'));
      }));
  }

  function mappingRow(frame, i, series, links) {
    var source = el('div', {}, [el('strong', {}, 'Source frame ' + (i + 1)),
      el('div', { 'class': 'ca-muted' }, frame.SourceSeries.length ?
        plural(frame.SourceInstancesCount, 'instance') + ' on it' : 'referred to only'),
      seriesLines(frame.SourceSeries, series, true, links)]);
    var anonymized = el('div', {}, frame.Anonymized.map(function (uid) {
      return el('div', { 'class': 'ca-uid ca-anonymized-uid' }, uid);
    }));
    if (!frame.Anonymized.length) {
      anonymized.appendChild(el('div', { 'class': 'ca-no' }, 'no counterpart found'));
    }
    append(anonymized, [el('div', { 'class': 'ca-muted' }, frame.AnonymizedSeries.length ?
      plural(frame.AnonymizedInstancesCount, 'instance') + ' on it' : 'referred to only'),
      seriesLines(frame.AnonymizedSeries, series, false, links)]);
    return row('ca-frame-row' + (frame.OneToOne ? '' : ' ca-problem'),
               [cell(source, 'ca-source'), cell(anonymized, 'ca-anonymized'),
                cell(el('span', { 'class': frame.OneToOne ? 'ca-yes' : 'ca-no' },
                        frame.OneToOne ? '\u2714 yes' : '\u2718 no'), 'ca-one-to-one')]);
  }

  function framesMapping(report, series, links) {
    var s = section('Frames of reference: source \u2192 anonymized', 'ca-mapping');
    if (!report.FramesOfReference.length) {
      s.content.appendChild(el('p', {}, 'The source lies on and refers to no frame of reference.'));
      return s.box;
    }
    var t = table(['Source', 'Anonymized', 'One-to-one'], 'ca-mapping-table');
    var frames = byFirstSeries(report.FramesOfReference, function (frame) {
      return frame.SourceSeries.map(function (id) { return number(series[id]); });
    });
    append(t.tBodies[0], frames.map(function (frame, i) { return mappingRow(frame, i, series, links); }));
    s.content.appendChild(t);
    return s.box;
  }

  function instanceLink(id, links, text) {
    return el('a', { href: links.instance(id), 'class': 'ca-instance' }, text || id);
  }

  var IN_SOURCE = { Resolved: 'resolved there: broken by the anonymization', Absent: 'absent there',
                    Unresolved: 'did not resolve there either', Unpaired: 'no source instance' };

  function references(report, links) {
    var list = report.UnresolvedReferences;
    var s = section('References that do not resolve: ' + report.UnresolvedReferencesCount +
                    truncated(list, report.UnresolvedReferencesCount), 'ca-unresolved');
    if (!list.length) {
      s.content.appendChild(el('p', {}, report.ReferencesCount ? 'Every one of the ' +
        plural(report.ReferencesCount, 'reference') + ' resolves inside the anonymized set.' :
        'The anonymized set holds no reference to check.'));
      return s.box;
    }
    var t = table(['Anonymized instance', 'Path', 'Kind', 'In the source']);
    append(t.tBodies[0], list.map(function (r) {
      var broken = r.InSource === 'Resolved' || r.InSource === 'Absent';
      return row('ca-reference' + (broken ? ' ca-problem' : ''),
                 [cell(instanceLink(r.Instance, links)), cell(r.Path, 'ca-path'), cell(r.Kind),
                  cell(IN_SOURCE[r.InSource] || r.InSource)]);
    }));
    s.content.appendChild(t);
    return s.box;
  }

  function leaks(report, links) {
    var list = report.Leaks;
    var s = section('Leaks of source identifiers: ' + report.LeaksCount + truncated(list, report.LeaksCount), 'ca-leaks');
    if (!list.length) {
      s.content.appendChild(el('p', {}, 'No identifier of the source remains in the anonymized files (private tags, ' +
                                        'sequences, free text and file meta included).'));
      return s.box;
    }
    var t = table(['Anonymized instance', 'Path', 'Holds the source\'s']);
    append(t.tBodies[0], list.map(function (leak) {
      return row('ca-leak ca-problem', [cell(instanceLink(leak.Instance, links)), cell(leak.Path, 'ca-path'),
                                        cell(leak.Found, 'ca-found')]);
    }));
    s.content.appendChild(t);
    return s.box;
  }

  function inconsistent(report) {
    var s = section('Inconsistent UID mappings: ' + report.InconsistentUids.length, 'ca-inconsistent');
    var t = table(['Attribute', 'Problem', 'Anonymized UID(s)']);
    append(t.tBodies[0], report.InconsistentUids.map(function (entry) {
      var uids = Array.isArray(entry.Anonymized) ? entry.Anonymized : [entry.Anonymized];
      return row('ca-problem', [cell(entry.Attribute), cell(entry.Problem === 'OneSourceUidBecameSeveral' ?
        'one source UID became several' : 'several source UIDs became one'),
        cell(el('span', { 'class': 'ca-uid' }, uids.join(', ')))]);
    }));
    s.content.appendChild(t);
    return s.box;
  }

  function removed(report, links) {
    var list = report.RemovedReferences;
    var s = section('References the de-identification removed (for information): ' + report.RemovedReferencesCount +
                    truncated(list, report.RemovedReferencesCount), 'ca-removed');
    var t = table(['Anonymized instance', 'Path', 'Kind']);
    append(t.tBodies[0], list.map(function (r) {
      return row('', [cell(instanceLink(r.Instance, links)), cell(r.Path), cell(r.Kind)]);
    }));
    s.content.appendChild(t);
    return s.box;
  }

  function unpaired(report, links) {
    var s = section('Instances without a counterpart', 'ca-unpaired');
    var sources = el('p', {}, 'Source: ' + report.UnpairedSourceInstances.length + ' ');
    report.UnpairedSourceInstances.forEach(function (id, i) {
      append(sources, [instanceLink(id, links, 'source instance ' + (i + 1)), ' ']);
    });
    var copies = el('p', {}, 'Anonymized (not judged): ' + report.UnpairedAnonymizedInstances.length + ' ');
    report.UnpairedAnonymizedInstances.forEach(function (id) {
      append(copies, [instanceLink(id, links), ' ']);
    });
    append(s.content, [sources, copies]);
    return s.box;
  }

  function reportView(pair, report, series, links) {
    var parts = [verdict(report), summary(pair, report, links), framesMapping(report, series, links),
                 references(report, links), leaks(report, links)];
    if (report.InconsistentUids.length) {
      parts.push(inconsistent(report));
    }
    if (report.RemovedReferences.length) {
      parts.push(removed(report, links));
    }
    if (report.UnpairedSourceInstances.length || report.UnpairedAnonymizedInstances.length) {
      parts.push(unpaired(report, links));
    }
    return el('div', { 'class': 'ca-report' }, parts);
  }

  /** Asks for the source when this resource names none (ctx as showFrames's). */
  function showPicker(target, ctx, level, id, why) {
    var input = el('input', { type: 'text', id: level + '-ca-source', 'data-mini': 'true',
                              placeholder: 'Orthanc ID of the source ' + level });
    var button = el('a', { href: '#', 'data-role': 'button', 'data-inline': 'true', 'data-icon': 'check',
                           'data-theme': 'b', id: level + '-ca-verify-source', 'class': 'ca-button' },
                    'Verify against this source');
    show(target, ctx, el('div', { 'class': 'ui-body ui-body-e ui-corner-all ca-picker' }, [
      el('p', {}, why || ('This ' + level + ' records no source (AnonymizedFrom) and the plugin ' +
        'stores no anonymized copy of it under the default project: it was not anonymized by the plugin, ' +
        'or under a PatientID or project of the caller\'s.')),
      el('p', {}, 'If this ' + level + ' is an anonymized copy, give the Orthanc ID of its source ' +
        '(the uuid in the address of the source\'s page):'),
      input, button]));
    button.addEventListener('click', function (event) {
      event.preventDefault();
      var source = input.value.trim();
      if (source) {
        verifyPair(target, ctx, { Source: source, Anonymized: id, Here: 'Anonymized' }, level);
      }
    });
  }

  /** Finds the other side of a study or series and verifies the pair (ctx as showFrames's). */
  function showVerification(target, ctx, level, id) {
    show(target, ctx, progressView('Looking for the other side of this ' + level + '\u2026').node);
    return findPair(ctx.base, level, id).then(function (pair) {
      return ctx.current() ? verifyPair(target, ctx, pair, level) : undefined;
    }, function (why) {
      showPicker(target, ctx, level, id, why);
    });
  }

  /** Verifies a pair, with a running clock meanwhile: the page stays alive during a long one. */
  function verifyPair(target, ctx, pair, level) {
    var started = Date.now();
    var progress = progressView('');
    var tick = function () {
      progress.text.textContent = 'Verifying: reading the headers of the source and of its anonymized copy and ' +
        'comparing them\u2026 ' + Math.round((Date.now() - started) / 1000) + ' s';
    };
    tick();
    show(target, ctx, progress.node);
    var timer = setInterval(tick, 1000);
    return request(ctx.base, 'POST', '/tools/verify-anonymization', { Source: pair.Source, Anonymized: pair.Anonymized })
      .then(function (report) {
        clearInterval(timer);
        return seriesOf(ctx.base, report).then(function (series) {
          show(target, ctx, reportView(pair, report, series, ctx.links));
        });
      }, function (error) {
        clearInterval(timer);
        var why = 'The verification failed: ' + error.message;
        if (pair.Here === 'Anonymized' && level) {
          showPicker(target, ctx, level, pair.Anonymized, why);
        } else {
          show(target, ctx, noticeView(why));
        }
      });
  }

  global.ConsistentAnonViews = {
    element: el, append: append, clear: clear, ensureStyle: ensureStyle, request: request, plural: plural,
    progressView: progressView, noticeView: noticeView, table: table, section: section,
    showFrames: showFrames, showVerification: showVerification, verifyPair: verifyPair
  };
}(window));

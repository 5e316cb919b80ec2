/*
 * Consistent anonymization in Orthanc Explorer: "Frames of reference" and "Verify anonymization"
 * on the study and series pages.
 *
 * Facts come from the plugin's routes (frames-of-reference, anonymized-counterpart,
 * verify-anonymization) and from the explorer's own reads of resources. Every request is
 * asynchronous, with the browser's credentials, so a long verification never freezes the page.
 * Nothing of a source's identifiers is written into the page by the verification panel: source
 * frames of reference are named by their series, never by their UID, and leaks say where and
 * what (the source attribute), never the value. Values are always written as text, never HTML.
 */
(function () {
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

  // --- requests ---------------------------------------------------------------------------

  function api(method, path, body) {
    var settings = { url: '..' + path, type: method, dataType: 'json', cache: false };
    if (body !== undefined) {
      settings.data = JSON.stringify(body);
      settings.contentType = 'application/json';
    }
    return $.ajax(settings);
  }

  function errorOf(xhr) {
    try {
      var answer = JSON.parse(xhr.responseText);
      if (answer && answer.Message) {
        return answer.Message;
      }
    } catch (ignored) { /* not JSON: fall back to the status */ }
    return 'HTTP ' + xhr.status + (xhr.statusText ? ' ' + xhr.statusText : '');
  }

  // --- building blocks --------------------------------------------------------------------

  function panelOf(level) {
    return $('#' + level + '-consistent-anon-panel');
  }

  /** A fresh panel with its title; older answers meant for another panel are dropped. */
  function openPanel(level, title, kind) {
    var panel = panelOf(level);
    var token = (panel.data('token') || 0) + 1;
    var close = $('<a>').attr({ href: '#', 'data-role': 'button', 'data-icon': 'delete',
                                'data-iconpos': 'notext', 'data-inline': 'true', title: 'Close' })
      .text('Close').addClass('ca-close')
      .click(function (event) {
        event.preventDefault();
        closePanel(level);
      });
    panel.empty().data('token', token).attr('data-panel', kind)
      .append($('<div>').addClass('ui-bar ui-bar-b ui-corner-all ca-title')
                .append($('<h3>').text(title)).append(close))
      .show();
    panel.trigger('create');
    panel[0].scrollIntoView({ behavior: 'smooth', block: 'start' });
    return { level: level, token: token, body: $('<div>').addClass('ca-body').appendTo(panel) };
  }

  function current(view) {
    return panelOf(view.level).data('token') === view.token;
  }

  function closePanel(level) {
    var panel = panelOf(level);
    panel.data('token', (panel.data('token') || 0) + 1).removeAttr('data-panel').empty().hide();
  }

  function progress(view, message) {
    var text = $('<span>').addClass('ca-progress-text').text(message);
    view.body.empty().append($('<div>').addClass('ui-body ui-body-c ui-corner-all ca-progress')
                               .append($('<div>').addClass('ca-spinner')).append(text));
    return text;
  }

  function notice(view, message, theme) {
    view.body.empty().append($('<div>').addClass('ui-body ui-corner-all ca-notice ui-body-' + (theme || 'e'))
                               .append($('<p>').text(message)));
  }

  function section(title, cls) {
    var box = $('<div>').addClass('ca-section ' + (cls || ''));
    box.append($('<div>').addClass('ui-bar ui-bar-c ui-corner-top').text(title));
    var content = $('<div>').addClass('ui-body ui-body-d ui-corner-bottom');
    box.append(content);
    return { box: box, content: content };
  }

  function table(headers) {
    var head = $('<tr>');
    $.each(headers, function (i, header) { head.append($('<th>').text(header)); });
    return $('<table>').addClass('ca-table').append($('<thead>').append(head)).append($('<tbody>'));
  }

  function cell(content, cls) {
    var td = $('<td>');
    if (cls) {
      td.addClass(cls);
    }
    return typeof content === 'string' ? td.text(content) : td.append(content);
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

  function number(series) {
    return series ? parseInt(series.SeriesNumber, 10) || 0 : 0;
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

  function plural(count, word) {
    return count + ' ' + word + (count === 1 ? '' : 's');
  }

  function instanceLink(id, text) {
    return $('<a>').attr('href', '#instance?uuid=' + id).addClass('ca-instance').text(text || id);
  }

  function truncated(list, count) {
    return count > list.length ? ' (the first ' + list.length + ' of ' + count + ')' : '';
  }

  // --- Frames of reference ----------------------------------------------------------------

  function seriesItem(series) {
    return $('<li>').addClass('ca-series-item').attr('data-series', series.ID)
      .append($('<a>').attr('href', '#series?uuid=' + series.ID)
                .append($('<span>').addClass('ca-series-label').text(seriesLabel(series)))
                .append($('<span>').addClass('ui-li-count').text(series.InstancesCount)));
  }

  function showFrames(view, frames) {
    view.body.empty();
    if (!frames.length) {
      notice(view, 'No instance here lies on or refers to a frame of reference.', 'c');
      return;
    }
    view.body.append($('<p>').addClass('ca-muted').text(
      plural(frames.length, 'frame') + ' of reference. Series that refer to a frame without lying on it ' +
      '(structure sets, registrations, segmentations, reports) are listed under it.'));
    frames = byFirstSeries(frames, function (frame) {
      return $.map(frame.Series, function (s) { return number(s); });
    });
    $.each(frames, function (i, frame) {
      var list = $('<ul>').attr({ 'data-role': 'listview', 'data-inset': 'true', 'data-theme': 'd',
                                  'data-divider-theme': 'b' })
        .addClass('ca-frame').attr('data-frame', frame.FrameOfReferenceUID);
      list.append($('<li>').attr('data-role', 'list-divider')
                    .append($('<span>').text('Frame of reference ' + (i + 1) + ': '))
                    .append($('<span>').addClass('ca-uid ca-frame-uid').text(frame.FrameOfReferenceUID))
                    .append($('<span>').addClass('ui-li-count').text(plural(frame.InstancesCount, 'instance'))));
      $.each(frame.Series, function (j, series) {
        list.append(seriesItem(series).addClass('ca-on'));
      });
      if (!frame.Series.length) {
        list.append($('<li>').addClass('ca-muted').text('No series of this resource lies on it.'));
      }
      if (frame.ReferencedBy.length) {
        list.append($('<li>').attr({ 'data-role': 'list-divider', 'data-theme': 'c' })
                      .text('Referring to it without lying on it'));
        $.each(frame.ReferencedBy, function (j, series) {
          list.append(seriesItem(series).addClass('ca-referring').attr('data-theme', 'e'));
        });
      }
      view.body.append(list);
    });
    view.body.trigger('create');
  }

  function framesClicked(level) {
    var id = $.mobile.pageData.uuid;
    var view = openPanel(level, 'Frames of reference', 'frames-of-reference');
    progress(view, 'Reading the headers of every instance\u2026');
    api('GET', '/' + PLURAL[level] + '/' + id + '/frames-of-reference')
      .done(function (frames) {
        if (current(view)) {
          showFrames(view, frames);
        }
      })
      .fail(function (xhr) {
        if (current(view)) {
          notice(view, 'The frames of reference could not be listed: ' + errorOf(xhr));
        }
      });
  }

  // --- Verify anonymization ---------------------------------------------------------------

  /** The source and the anonymized side for this resource: AnonymizedFrom when it records its
   *  source, else the anonymized copy the plugin made of it (computed by the plugin). */
  function findPair(level, id) {
    var found = $.Deferred();
    var base = '/' + PLURAL[level] + '/' + id;
    api('GET', base).done(function (resource) {
      if (resource.AnonymizedFrom) {
        found.resolve({ Source: resource.AnonymizedFrom, Anonymized: id, Here: 'Anonymized' });
        return;
      }
      api('GET', base + '/anonymized-counterpart').done(function (counterpart) {
        found.resolve({ Source: id, Anonymized: counterpart.ID, Here: 'Source' });
      }).fail(function (xhr) {
        found.reject(xhr.status === 404 ? null : errorOf(xhr));
      });
    }).fail(function (xhr) {
      found.reject(errorOf(xhr));
    });
    return found.promise();
  }

  function showPicker(view, level, id, why) {
    var input = $('<input>').attr({ type: 'text', id: level + '-ca-source', 'data-mini': 'true',
                                    placeholder: 'Orthanc ID of the source ' + level });
    var button = $('<a>').attr({ href: '#', 'data-role': 'button', 'data-inline': 'true', 'data-icon': 'check',
                                 'data-theme': 'b', id: level + '-ca-verify-source' }).text('Verify against this source');
    view.body.empty().append(
      $('<div>').addClass('ui-body ui-body-e ui-corner-all ca-picker')
        .append($('<p>').text(why || ('This ' + level + ' records no source (AnonymizedFrom) and the plugin ' +
          'stores no anonymized copy of it under the default project: it was not anonymized by the plugin, ' +
          'or under a PatientID or project of the caller\'s.')))
        .append($('<p>').text('If this ' + level + ' is an anonymized copy, give the Orthanc ID of its source ' +
          '(the uuid in the address of the source\'s page):'))
        .append(input).append(button));
    view.body.trigger('create');
    button.click(function (event) {
      event.preventDefault();
      var source = $.trim(input.val());
      if (source) {
        verifyPair(view, { Source: source, Anonymized: id, Here: 'Anonymized' }, level);
      }
    });
  }

  function verifyClicked(level) {
    var id = $.mobile.pageData.uuid;
    var view = openPanel(level, 'Verify anonymization', 'verify-anonymization');
    progress(view, 'Looking for the other side of this ' + level + '\u2026');
    findPair(level, id)
      .done(function (pair) {
        if (current(view)) {
          verifyPair(view, pair, level);
        }
      })
      .fail(function (why) {
        if (current(view)) {
          showPicker(view, level, id, why);
        }
      });
  }

  function verifyPair(view, pair, level) {
    var started = new Date().getTime();
    var text = progress(view, '');
    var tick = function () {
      var seconds = Math.round((new Date().getTime() - started) / 1000);
      text.text('Verifying: reading the headers of the source and of its anonymized copy and comparing ' +
                'them\u2026 ' + seconds + ' s');
    };
    tick();
    var timer = setInterval(tick, 1000);
    api('POST', '/tools/verify-anonymization', { Source: pair.Source, Anonymized: pair.Anonymized })
      .always(function () { clearInterval(timer); })
      .done(function (report) {
        if (current(view)) {
          withSeries(report, function (series) {
            if (current(view)) {
              showReport(view, pair, report, series);
            }
          });
        }
      })
      .fail(function (xhr) {
        var why = 'The verification failed: ' + errorOf(xhr);
        if (!current(view)) {
          return;
        }
        if (pair.Here === 'Anonymized') {
          showPicker(view, level, pair.Anonymized, why);
        } else {
          notice(view, why);
        }
      });
  }

  /** Number, modality, description and size of every series the report names, from the explorer's
   *  own reads (a series that cannot be read is shown by its count alone). */
  function withSeries(report, callback) {
    var ids = {};
    $.each(report.FramesOfReference, function (i, frame) {
      $.each(frame.SourceSeries.concat(frame.AnonymizedSeries), function (j, id) { ids[id] = true; });
    });
    var series = {};
    var pending = Object.keys(ids);
    var left = pending.length;
    if (!left) {
      callback(series);
    }
    $.each(pending, function (i, id) {
      api('GET', '/series/' + id).done(function (s) {
        var tags = s.MainDicomTags || {};
        series[id] = { ID: id, SeriesNumber: tags.SeriesNumber, Modality: tags.Modality,
                       SeriesDescription: tags.SeriesDescription, InstancesCount: s.Instances.length };
      }).always(function () {
        left -= 1;
        if (left === 0) {
          callback(series);
        }
      });
    });
  }

  function problems(report) {
    var list = [];
    var broken = $.grep(report.UnresolvedReferences, function (r) {
      return r.InSource === 'Resolved' || r.InSource === 'Absent';
    }).length;
    var split = $.grep(report.FramesOfReference, function (f) { return !f.OneToOne; }).length;
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
      return $('<div>').addClass('ca-verdict ca-clean').attr('data-clean', 'true')
        .text('\u2714 Clean: ' + plural(report.PairedInstancesCount, 'instance') + ' paired, every frame of ' +
              'reference maps one-to-one, every reference resolves, nothing of the source remains.');
    }
    var box = $('<div>').addClass('ca-verdict ca-not-clean').attr('data-clean', 'false').text('\u2718 Not clean');
    var list = $('<ul>');
    $.each(problems(report), function (i, problem) { list.append($('<li>').text(problem)); });
    return box.append(list);
  }

  function summary(pair, report) {
    var paired = report.PairedBy;
    var s = section('Sets compared', 'ca-summary');
    var t = table(['', 'Type', 'Instances', '']);
    var sourceLink = $('<a>').attr('href', '#' + report.Source.Type.toLowerCase() + '?uuid=' + report.Source.ID)
      .text(pair.Here === 'Source' ? 'this ' + report.Source.Type.toLowerCase() : 'open the source');
    var anonymizedLink = $('<a>').attr('href', '#' + report.Anonymized.Type.toLowerCase() + '?uuid=' + report.Anonymized.ID)
      .text(pair.Here === 'Anonymized' ? 'this ' + report.Anonymized.Type.toLowerCase() : 'open the anonymized copy');
    t.find('tbody')
      .append($('<tr>').addClass('ca-source-side').append(cell('Source'), cell(report.Source.Type),
                                                          cell(String(report.Source.InstancesCount)), cell(sourceLink)))
      .append($('<tr>').addClass('ca-anonymized-side').append(cell('Anonymized'), cell(report.Anonymized.Type),
                                                              cell(String(report.Anonymized.InstancesCount)),
                                                              cell(anonymizedLink)));
    s.content.append(t).append($('<p>').addClass('ca-muted ca-paired').text(
      plural(report.PairedInstancesCount, 'instance') + ' paired (' + paired.Pseudonym + ' by the plugin\'s pseudonym, ' +
      paired.AnonymizedFrom + ' by AnonymizedFrom, ' + paired.Attributes + ' by unchanged attributes); ' +
      report.UnpairedSourceInstances.length + ' source and ' + report.UnpairedAnonymizedInstances.length +
      ' anonymized instances unpaired.'));
    return s.box;
  }

  function seriesLines(ids, series, withoutText) {
    var box = $('<div>');
    $.each(ids.slice().sort(function (a, b) { return number(series[a]) - number(series[b]); }), function (i, id) {
      var known = series[id];
      box.append($('<div>').addClass('ca-series').attr('data-series', id)
                   .append($('<a>').attr('href', '#series?uuid=' + id)
                             .text(known ? seriesLabel(known, withoutText) + ' (' + known.InstancesCount + ')' : 'a series')));
    });
    return box;
  }

  function framesMapping(report, series) {
    var s = section('Frames of reference: source \u2192 anonymized', 'ca-mapping');
    if (!report.FramesOfReference.length) {
      s.content.append($('<p>').text('The source lies on and refers to no frame of reference.'));
      return s.box;
    }
    var t = table(['Source', 'Anonymized', 'One-to-one']);
    var frames = byFirstSeries(report.FramesOfReference, function (frame) {
      return $.map(frame.SourceSeries, function (id) { return number(series[id]); });
    });
    t.addClass('ca-mapping-table');
    $.each(frames, function (i, frame) {
      var source = $('<div>').append($('<strong>').text('Source frame ' + (i + 1)))
        .append($('<div>').addClass('ca-muted').text(frame.SourceSeries.length ?
          plural(frame.SourceInstancesCount, 'instance') + ' on it' : 'referred to only'))
        .append(seriesLines(frame.SourceSeries, series, true));
      var anonymized = $('<div>');
      $.each(frame.Anonymized, function (j, uid) {
        anonymized.append($('<div>').addClass('ca-uid ca-anonymized-uid').text(uid));
      });
      if (!frame.Anonymized.length) {
        anonymized.append($('<div>').addClass('ca-no').text('no counterpart found'));
      }
      anonymized.append($('<div>').addClass('ca-muted').text(frame.AnonymizedSeries.length ?
        plural(frame.AnonymizedInstancesCount, 'instance') + ' on it' : 'referred to only'))
        .append(seriesLines(frame.AnonymizedSeries, series));
      var row = $('<tr>').addClass('ca-frame-row').toggleClass('ca-problem', !frame.OneToOne)
        .append(cell(source, 'ca-source'), cell(anonymized, 'ca-anonymized'),
                cell($('<span>').addClass(frame.OneToOne ? 'ca-yes' : 'ca-no')
                       .text(frame.OneToOne ? '\u2714 yes' : '\u2718 no'), 'ca-one-to-one'));
      t.find('tbody').append(row);
    });
    return s.box.append(s.content.append(t));
  }

  function references(report) {
    var list = report.UnresolvedReferences;
    var s = section('References that do not resolve: ' + report.UnresolvedReferencesCount +
                    truncated(list, report.UnresolvedReferencesCount), 'ca-unresolved');
    if (!list.length) {
      s.content.append($('<p>').text(report.ReferencesCount ? 'Every one of the ' +
        plural(report.ReferencesCount, 'reference') + ' resolves inside the anonymized set.' :
        'The anonymized set holds no reference to check.'));
      return s.box;
    }
    var t = table(['Anonymized instance', 'Path', 'Kind', 'In the source']);
    $.each(list, function (i, r) {
      var broken = r.InSource === 'Resolved' || r.InSource === 'Absent';
      var meaning = { Resolved: 'resolved there: broken by the anonymization', Absent: 'absent there',
                      Unresolved: 'did not resolve there either', Unpaired: 'no source instance' }[r.InSource];
      t.find('tbody').append($('<tr>').addClass('ca-reference').toggleClass('ca-problem', broken)
        .append(cell(instanceLink(r.Instance)), cell(r.Path, 'ca-path'), cell(r.Kind),
                cell(meaning || r.InSource)));
    });
    return s.box.append(s.content.append(t));
  }

  function leaks(report) {
    var list = report.Leaks;
    var s = section('Leaks of source identifiers: ' + report.LeaksCount + truncated(list, report.LeaksCount), 'ca-leaks');
    if (!list.length) {
      s.content.append($('<p>').text('No identifier of the source remains in the anonymized files (private tags, ' +
                                     'sequences, free text and file meta included).'));
      return s.box;
    }
    var t = table(['Anonymized instance', 'Path', 'Holds the source\'s']);
    $.each(list, function (i, leak) {
      t.find('tbody').append($('<tr>').addClass('ca-leak ca-problem')
        .append(cell(instanceLink(leak.Instance)), cell(leak.Path, 'ca-path'), cell(leak.Found, 'ca-found')));
    });
    return s.box.append(s.content.append(t));
  }

  function inconsistent(report) {
    var s = section('Inconsistent UID mappings: ' + report.InconsistentUids.length, 'ca-inconsistent');
    var t = table(['Attribute', 'Problem', 'Anonymized UID(s)']);
    $.each(report.InconsistentUids, function (i, entry) {
      var uids = $.isArray(entry.Anonymized) ? entry.Anonymized : [entry.Anonymized];
      t.find('tbody').append($('<tr>').addClass('ca-problem')
        .append(cell(entry.Attribute), cell(entry.Problem === 'OneSourceUidBecameSeveral' ?
          'one source UID became several' : 'several source UIDs became one'),
                cell($('<span>').addClass('ca-uid').text(uids.join(', ')))));
    });
    return s.box.append(s.content.append(t));
  }

  function removed(report) {
    var list = report.RemovedReferences;
    var s = section('References the de-identification removed (for information): ' + report.RemovedReferencesCount +
                    truncated(list, report.RemovedReferencesCount), 'ca-removed');
    var t = table(['Anonymized instance', 'Path', 'Kind']);
    $.each(list, function (i, r) {
      t.find('tbody').append($('<tr>').append(cell(instanceLink(r.Instance)), cell(r.Path), cell(r.Kind)));
    });
    return s.box.append(s.content.append(t));
  }

  function unpaired(report) {
    var s = section('Instances without a counterpart', 'ca-unpaired');
    var sources = $('<p>').text('Source: ' + report.UnpairedSourceInstances.length + ' ');
    $.each(report.UnpairedSourceInstances, function (i, id) {
      sources.append(instanceLink(id, 'source instance ' + (i + 1))).append(' ');
    });
    var copies = $('<p>').text('Anonymized (not judged): ' + report.UnpairedAnonymizedInstances.length + ' ');
    $.each(report.UnpairedAnonymizedInstances, function (i, id) {
      copies.append(instanceLink(id)).append(' ');
    });
    return s.box.append(s.content.append(sources).append(copies));
  }

  function showReport(view, pair, report, series) {
    view.body.empty().append(verdict(report), summary(pair, report), framesMapping(report, series),
                             references(report), leaks(report));
    if (report.InconsistentUids.length) {
      view.body.append(inconsistent(report));
    }
    if (report.RemovedReferences.length) {
      view.body.append(removed(report));
    }
    if (report.UnpairedSourceInstances.length || report.UnpairedAnonymizedInstances.length) {
      view.body.append(unpaired(report));
    }
  }

  // --- the buttons ------------------------------------------------------------------------

  function item(id, icon, text) {
    return $('<li>').attr('data-icon', icon).append($('<a>').attr({ href: '#', id: id }).text(text));
  }

  $.each(['study', 'series'], function (i, level) {
    $('#' + level).live('pagebeforecreate', function () {
      if ($('#consistent-anon-style').length === 0) {
        $('<style>').attr('id', 'consistent-anon-style').text(STYLE).appendTo('head');
      }
      $('<ul>').attr({ 'data-role': 'listview', 'data-inset': 'true', 'data-theme': 'd',
                       'data-divider-theme': 'c', id: level + '-consistent-anon' })
        .append($('<li>').attr('data-role', 'list-divider').text('Consistent anonymization'))
        .append(item(level + '-frames-of-reference', 'grid', 'Frames of reference'))
        .append(item(level + '-verify-anonymization', 'check', 'Verify anonymization'))
        .insertAfter($('#' + level + '-anonymize').closest('ul'));
      $('<div>').attr('id', level + '-consistent-anon-panel').addClass('ca-panel').hide()
        .appendTo($(this).children('[data-role="content"]'));
    });
    $('#' + level).live('pagebeforeshow', function () { closePanel(level); });
    $('#' + level + '-frames-of-reference').live('click', function (event) {
      event.preventDefault();
      framesClicked(level);
    });
    $('#' + level + '-verify-anonymization').live('click', function (event) {
      event.preventDefault();
      verifyClicked(level);
    });
  });
}());

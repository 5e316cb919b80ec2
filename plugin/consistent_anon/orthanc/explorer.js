/*
 * Consistent anonymization in Orthanc Explorer: "Frames of reference" and "Verify anonymization"
 * on the study and series pages.
 *
 * The panels are drawn by the plugin's one renderer, ui/views.js, which this script loads from the
 * plugin's route (the same file the plugin's own pages load): this script adds only the buttons
 * and the panels of the legacy explorer (jQuery Mobile) and says where its links go. Facts come
 * from the plugin's routes (frames-of-reference, anonymized-counterpart, verify-anonymization) and
 * from the explorer's own reads of resources; every request is asynchronous, with the browser's
 * credentials, so a long verification never freezes the page.
 */
(function () {
  'use strict';

  var BASE = '..';  // Orthanc's routes, from /app/explorer.html
  var LINKS = {
    series: function (id) { return '#series?uuid=' + encodeURIComponent(id); },
    instance: function (id) { return '#instance?uuid=' + encodeURIComponent(id); },
    resource: function (type, id) { return '#' + type + '?uuid=' + encodeURIComponent(id); }
  };
  var loading = null;

  /** The renderer, loaded once, at the first click: it defines window.ConsistentAnonViews. */
  function views() {
    if (!loading) {
      loading = $.ajax({ url: BASE + '/consistent-anonymization/ui/views.js', dataType: 'script', cache: true });
    }
    return loading;
  }

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
    var body = $('<div>').addClass('ca-body').appendTo(panel);
    return {
      body: body[0],
      context: {
        base: BASE,
        links: LINKS,
        current: function () { return panel.data('token') === token; },
        created: function (node) { $(node).trigger('create'); }
      }
    };
  }

  function closePanel(level) {
    var panel = panelOf(level);
    panel.data('token', (panel.data('token') || 0) + 1).removeAttr('data-panel').empty().hide();
  }

  /** Opens the panel and draws into it once the renderer is there. */
  function clicked(level, title, kind, draw) {
    var id = $.mobile.pageData.uuid;
    var view = openPanel(level, title, kind);
    views().done(function () {
      window.ConsistentAnonViews.ensureStyle(document);
      draw(window.ConsistentAnonViews, view.body, view.context, level, id);
    }).fail(function () {
      $(view.body).text('The plugin\'s renderer (consistent-anonymization/ui/views.js) could not be loaded.');
    });
  }

  // --- the buttons ------------------------------------------------------------------------

  function item(id, icon, text) {
    return $('<li>').attr('data-icon', icon).append($('<a>').attr({ href: '#', id: id }).text(text));
  }

  $.each(['study', 'series'], function (i, level) {
    $('#' + level).live('pagebeforecreate', function () {
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
      clicked(level, 'Frames of reference', 'frames-of-reference', function (r, body, ctx, l, id) {
        r.showFrames(body, ctx, l, id);
      });
    });
    $('#' + level + '-verify-anonymization').live('click', function (event) {
      event.preventDefault();
      clicked(level, 'Verify anonymization', 'verify-anonymization', function (r, body, ctx, l, id) {
        r.showVerification(body, ctx, l, id);
      });
    });
  });
}());

// k8sworker console: as-you-type validation of the deploy form, and
// updates of `data-live` sections without reloading the page.
(function () {
  'use strict';

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function toLogin(response) {
    if (response.status === 401 || (response.redirected && /\/ui\/login/.test(response.url))) {
      window.location.href = '/ui/login?expired=1';
      return true;
    }
    return false;
  }

  // Shows `errors` ([{field, message}]) next to their fields; an error
  // without a field of its own goes to its entry, else to the form.
  function showErrors(form, errors) {
    form.querySelectorAll('[data-error-for]').forEach(function (slot) { slot.textContent = ''; });
    form.querySelectorAll('[aria-invalid]').forEach(function (input) { input.removeAttribute('aria-invalid'); });
    var general = form.querySelector('[data-error-for=""]');
    errors.forEach(function (error) {
      var field = error.field || '';
      var slot = null;
      var path = field;
      while (slot === null) {
        slot = form.querySelector('[data-error-for="' + CSS.escape(path) + '"]');
        if (slot !== null || path === '') { break; }
        var cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
        path = cut > 0 ? path.slice(0, cut) : '';
      }
      slot = slot || general;
      if (slot === null) { return; }
      slot.textContent = (slot.textContent ? slot.textContent + ' ' : '') + error.message;
      var input = document.getElementById('f-' + path);
      if (input !== null) { input.setAttribute('aria-invalid', 'true'); }
    });
    var status = form.querySelector('[data-validation-status]');
    if (status !== null) {
      status.textContent = errors.length === 0 ? 'No problems found.' : errors.length + ' problem(s) found.';
    }
  }

  var form = document.getElementById('deploy-form');
  if (form !== null && form.dataset.validate) {
    var validate = debounce(function () {
      var body = new URLSearchParams(new FormData(form));
      fetch(form.dataset.validate, {
        method: 'POST',
        body: body,
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' }
      }).then(function (response) {
        if (toLogin(response) || !response.ok) { return null; }
        return response.json();
      }).then(function (answer) {
        if (answer !== null) { showErrors(form, answer.errors || []); }
      }).catch(function () { /* offline: the submit validates again */ });
    }, 400);
    form.addEventListener('input', validate);
    form.addEventListener('change', validate);
  }

  var live = document.querySelectorAll('[data-live]');
  if (live.length > 0) {
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(window.location.href, { credentials: 'same-origin', headers: { 'X-Console-Live': '1' } })
        .then(function (response) {
          if (toLogin(response) || !response.ok) { return null; }
          return response.text();
        })
        .then(function (text) {
          if (text === null) { return; }
          var fresh = new DOMParser().parseFromString(text, 'text/html');
          document.querySelectorAll('[data-live]').forEach(function (section) {
            var next = fresh.getElementById(section.id);
            if (next !== null && next.innerHTML !== section.innerHTML && !section.contains(document.activeElement)) {
              section.innerHTML = next.innerHTML;
            }
          });
        })
        .catch(function () { /* try again on the next tick */ })
        .then(function () { busy = false; });
    }, 1500);
  }
})();

// Keyboard shortcuts and media reveal for the review console. Loaded from the package
// (the CSP allows no inline script); it never inserts HTML, only toggles classes and fields.
"use strict";

(function () {
  function $(id) { return document.getElementById(id); }

  function toggleReveal() {
    document.querySelectorAll("[data-media]").forEach(function (el) {
      el.classList.toggle("blurred");
    });
  }

  function choose(actionId, otherId) {
    var box = $(actionId);
    if (!box) { return; }
    box.checked = true;
    var other = $(otherId);
    if (other) { other.checked = false; }
    var policy = $("policy");
    if (policy) { policy.focus(); }
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var reveal = $("reveal");
    if (reveal) { reveal.addEventListener("click", toggleReveal); }
    // Videos stay muted (the attribute, and again here); the reviewer picks the speed.
    var speed = $("speed");
    document.querySelectorAll("video").forEach(function (video) { video.muted = true; });
    if (speed) {
      speed.addEventListener("change", function () {
        document.querySelectorAll("video").forEach(function (video) {
          video.playbackRate = parseFloat(speed.value) || 1;
        });
      });
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (typing(event.target)) {
      if (event.key === "Escape") { event.target.blur(); }
      return;  // Enter in the reason field submits the form natively: submit-and-next.
    }
    switch (event.key) {
      case "j": {
        var skip = $("skip");
        if (skip) { skip.submit(); } else { window.location.assign("/console/next"); }
        break;
      }
      case "k": window.history.back(); break;
      case "r": toggleReveal(); break;
      case "a": choose("act-approve", "act-remove"); break;
      case "x": choose("act-remove", "act-approve"); break;
      case "Enter": {
        var form = $("decide");
        if (form) { form.requestSubmit(); }
        break;
      }
      default: return;
    }
    event.preventDefault();
  });
}());

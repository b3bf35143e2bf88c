// The page's behaviour, plain JavaScript (no build step, no CDN): hovering a skill chip marks its words in the
// sentence; the form (served pages only) posts the ad to /extract.html and shows the view it returns.
(function () {
  "use strict";

  function marksOf(chip) {
    var sentence = chip.closest(".esco-sentence");
    var uri = chip.getAttribute("data-uri");
    if (!sentence || !uri) return [];
    return Array.prototype.filter.call(sentence.querySelectorAll("mark[data-uris]"), function (mark) {
      return mark.getAttribute("data-uris").split(" ").indexOf(uri) >= 0;
    });
  }

  function highlight(event, on) {
    var chip = event.target.closest && event.target.closest(".esco-chip");
    if (!chip) return;
    chip.classList.toggle("hl", on);
    marksOf(chip).forEach(function (mark) { mark.classList.toggle("hl", on); });
  }

  document.addEventListener("mouseover", function (event) { highlight(event, true); });
  document.addEventListener("mouseout", function (event) { highlight(event, false); });

  var form = document.getElementById("esco-form");
  if (!form) return;
  var textarea = document.getElementById("esco-ad");
  var button = document.getElementById("esco-submit");
  var status = document.getElementById("esco-status");
  var results = document.getElementById("esco-results");
  var maxChars = parseInt(form.getAttribute("data-max-chars"), 10);

  function say(message, isError) {
    status.textContent = message;
    status.classList.toggle("error", !!isError);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = textarea.value;
    if (!text.trim()) { say("Paste an ad first.", true); return; }
    if (maxChars && text.length > maxChars) {
      say("The ad is " + text.length + " characters; this server reads at most " + maxChars + ".", true);
      return;
    }
    var type = /<\/?[a-z][^>]*>/i.test(text) ? "text/html" : "text/plain";
    button.disabled = true;
    say("Reading the ad…");
    fetch("extract.html", { method: "POST", headers: { "Content-Type": type + "; charset=utf-8" }, body: text })
      .then(function (response) {
        if (response.ok) return response.text();
        return response.json().then(function (body) {
          throw new Error(body.detail || response.statusText);
        }, function () { throw new Error(response.status + " " + response.statusText); });
      })
      .then(function (html) { results.innerHTML = html; say(""); })
      .catch(function (error) { say(error.message, true); })
      .then(function () { button.disabled = false; });
  });
})();

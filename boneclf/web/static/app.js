// The little a page needs beyond HTML: a disputed label needs a note; filters apply when changed.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.review")) {
    const note = form.querySelector("textarea[name=note]");
    const sync = () => {
      const chosen = form.querySelector("input[name=decision]:checked");
      const needsNote = chosen !== null && / disputed$/.test(chosen.value);
      note.required = needsNote;
      note.placeholder = needsNote ? "why: what the label should be, and what shows it" : "";
    };
    form.addEventListener("change", sync);
    sync();
  }
  const filters = document.getElementById("filters");
  if (filters) {
    for (const select of filters.querySelectorAll("select")) {
      select.addEventListener("change", () => filters.requestSubmit());
    }
  }
});

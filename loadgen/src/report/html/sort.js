// Sortable tables: a header click (or Enter/Space on it) sorts by that column, again the other
// way. Cells sort by their data-sort number when they have one, else by text; empty and "-" cells
// stay last, and equal keys keep the report's order. The control is a span with role=button, not
// a <button>: Chromium leaves buttons out of table headers it repeats on printed pages.
(function () {
  "use strict";
  function key(cell) {
    var number = cell.getAttribute("data-sort");
    if (number !== null) return { number: parseFloat(number) };
    var text = cell.textContent.trim();
    return text === "" || text === "-" ? null : { text: text };
  }
  function compare(a, b) {
    if (a.number !== undefined && b.number !== undefined) return a.number - b.number;
    return String(a.text !== undefined ? a.text : a.number).localeCompare(
      String(b.text !== undefined ? b.text : b.number), undefined, { numeric: true });
  }
  function sortBy(table, th, column) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th[aria-sort]").forEach(function (other) {
      other.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      var a = key(x.cells[column]);
      var b = key(y.cells[column]);
      var order = x.getAttribute("data-order") - y.getAttribute("data-order");
      if (!a || !b) return (a ? 0 : 1) - (b ? 0 : 1) || order;
      return (ascending ? compare(a, b) : compare(b, a)) || order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row, i) {
      row.setAttribute("data-order", i);
    });
    table.querySelectorAll("thead th").forEach(function (th, column) {
      var title = th.textContent.trim();
      if (!title) return;
      var button = document.createElement("span");
      button.setAttribute("role", "button");
      button.tabIndex = 0;
      button.title = "Sort by " + title;
      while (th.firstChild) button.appendChild(th.firstChild);
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () { sortBy(table, th, column); });
      button.addEventListener("keydown", function (event) {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
        sortBy(table, th, column);
      });
    });
  });
})();

"use strict";
// The results matrix: tests as rows, provider × prompt as columns. Rows are
// kept as JSON in <script type="application/json" class="gx-rows"> chunks,
// parsed when first needed, and drawn a page at a time with textContent only,
// so no text of a result is ever read as markup.
(() => {
  const $ = (s) => document.querySelector(s);
  const matrix = $("#gx-matrix");
  const per = Number(matrix.dataset.chunk);
  const cols = JSON.parse($("#gx-cols").textContent);
  const chunks = Array.from(document.querySelectorAll("script.gx-rows"));
  const parsed = [];
  const chunk = (i) => parsed[i] || (parsed[i] = JSON.parse(chunks[i].textContent));
  const total = chunks.length ? (chunks.length - 1) * per + chunk(chunks.length - 1).length : 0;
  const rowAt = (n) => chunk(Math.floor(n / per))[n % per];
  const colOf = new Map(cols.map((c, i) => [c.p + "/" + c.q, i]));
  const state = { page: 0, size: 25, fails: false, differ: false, text: "" };
  let shown = null; // row numbers passing the filters; null: every row

  const failing = (row) => row.c.some((c) => c.s !== "pass");
  const differing = (row) =>
    row.c.some((c) => c.s !== row.c[0].s || c.o !== row.c[0].o);
  const has = (row, q) =>
    (row.d || "").toLowerCase().includes(q) || (row.v || "").toLowerCase().includes(q) ||
    row.c.some((c) => [c.o, c.why, c.e].some((s) => (s || "").toLowerCase().includes(q)));

  function refilter() {
    const q = state.text.trim().toLowerCase();
    if (!state.fails && !state.differ && !q) {
      shown = null;
    } else {
      shown = [];
      for (let n = 0; n < total; n++) {
        const row = rowAt(n);
        if (state.fails && !failing(row)) continue;
        if (state.differ && !differing(row)) continue;
        if (q && !has(row, q)) continue;
        shown.push(n);
      }
    }
    state.page = 0;
    draw();
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function output(text) {
    const limit = 300;
    if (text.length <= limit) return el("pre", null, text);
    const d = el("details");
    const s = el("summary", null, text.slice(0, limit) + " …");
    d.append(s, el("pre", null, text));
    return d;
  }

  function cell(c) {
    const td = el("td", "cell " + c.s);
    td.append(el("span", "badge " + c.s, c.s.toUpperCase()));
    td.append(el("span", "meta", " " + c.ms + " ms" + (c.k ? " · cached" : "") +
      (c.usd ? " · $" + c.usd.toFixed(5) : "") + " · score " + c.sc));
    td.append(output(c.e ? "error: " + c.e : c.o));
    if (c.why) td.append(el("div", "why", c.why));
    if (c.a && c.a.length) {
      const ul = el("ul", "why");
      for (const [type, pass, reason] of c.a) {
        ul.append(el("li", null, (pass ? "✔ " : "✘ ") + type + (reason ? ": " + reason : "")));
      }
      td.append(ul);
    }
    return td;
  }

  function draw() {
    const count = shown ? shown.length : total;
    const pages = Math.max(1, Math.ceil(count / state.size));
    state.page = Math.min(state.page, pages - 1);
    const head = el("tr");
    head.append(el("th", null, "Test"));
    for (const c of cols) {
      const th = el("th", "col");
      th.append(el("div", null, c.provider), el("div", "meta", c.prompt));
      head.append(th);
    }
    const body = document.createDocumentFragment();
    const first = state.page * state.size;
    for (let i = first; i < Math.min(count, first + state.size); i++) {
      const row = rowAt(shown ? shown[i] : i);
      const tr = el("tr", failing(row) ? "row failing" : "row passing");
      const th = el("th", "test");
      th.append(el("div", null, "#" + row.t + (row.r ? " (repeat " + row.r + ")" : "") + (row.d ? " " + row.d : "")));
      if (row.v) th.append(el("div", "vars", row.v));
      tr.append(th);
      const cells = new Array(cols.length).fill(null);
      for (const c of row.c) {
        const at = colOf.get(c.p + "/" + c.q);
        if (at !== undefined) (cells[at] = cells[at] || []).push(c);
      }
      for (const list of cells) {
        if (!list) { tr.append(el("td", "cell missing", "—")); continue; }
        const td = cell(list[0]);
        for (const more of list.slice(1)) td.append(...cell(more).childNodes);
        tr.append(td);
      }
      body.append(tr);
    }
    $("#gx-matrix thead").replaceChildren(head);
    $("#gx-matrix tbody").replaceChildren(body);
    $("#gx-page").textContent = "page " + (state.page + 1) + " of " + pages + " · " + count +
      " of " + total + " rows";
    $("#gx-prev").disabled = state.page === 0;
    $("#gx-next").disabled = state.page >= pages - 1;
  }

  $("#gx-fails").addEventListener("change", (e) => { state.fails = e.target.checked; refilter(); });
  $("#gx-differ").addEventListener("change", (e) => { state.differ = e.target.checked; refilter(); });
  let typing;
  $("#gx-search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.text = e.target.value; refilter(); }, 200);
  });
  $("#gx-size").addEventListener("change", (e) => { state.size = Number(e.target.value); draw(); });
  $("#gx-prev").addEventListener("click", () => { state.page--; draw(); });
  $("#gx-next").addEventListener("click", () => { state.page++; draw(); });
  draw();
  matrix.dataset.ready = "true";
})();

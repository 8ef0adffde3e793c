/* retrolog UI: sortable tables, run selection and uPlot charts fed by /api/metrics.
 * All text from the store is inserted with textContent, never as HTML. */
(function () {
  "use strict";

  // ---- sortable tables --------------------------------------------------------------
  function cellKey(cell) {
    if (!cell) return "";
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    return raw;
  }
  function compareKeys(a, b) {
    if (a === "" && b === "") return 0;
    if (a === "") return 1; // empty cells last
    if (b === "") return -1;
    var na = Number(a), nb = Number(b);
    if (!isNaN(na) && !isNaN(nb)) return na - nb;
    return a.localeCompare(b, undefined, { numeric: true });
  }
  function makeSortable(table) {
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(head.cells, function (th, col) {
      if (th.classList.contains("nosort")) return;
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("sorted-asc");
        Array.prototype.forEach.call(head.cells, function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(asc ? "sorted-asc" : "sorted-desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var k1 = cellKey(r1.cells[col]), k2 = cellKey(r2.cells[col]);
          if (k1 === "" || k2 === "") return compareKeys(k1, k2);
          var c = compareKeys(k1, k2);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  // ---- run selection ----------------------------------------------------------------
  function setupSelection() {
    var form = document.getElementById("compare-form");
    if (!form) return;
    var button = document.getElementById("compare");
    var count = document.getElementById("selected-count");
    var all = document.getElementById("select-all");
    function update() {
      var picked = form.querySelectorAll("input.pick:checked").length;
      button.disabled = picked === 0;
      count.textContent = picked ? picked + " selected" : "select runs to compare";
    }
    form.addEventListener("change", function (ev) {
      if (ev.target === all) {
        form.querySelectorAll("input.pick").forEach(function (b) { b.checked = all.checked; });
      }
      update();
    });
    update();
  }

  // ---- colours ----------------------------------------------------------------------
  var PALETTE = ["#2f6fde", "#e8743b", "#19a979", "#c23b8f", "#945ecf", "#d4a100", "#13a4b4",
    "#6f7d8c", "#e0474c", "#5b8c2a"];
  var RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [230, 190, 20]];
  function ramp(t) {
    var x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1), i = Math.min(Math.floor(x), RAMP.length - 2), f = x - i;
    var c = RAMP[i].map(function (v, k) { return Math.round(v + (RAMP[i + 1][k] - v) * f); });
    return "rgb(" + c.join(",") + ")";
  }
  function groupColours(groups) {
    var distinct = Array.from(new Set(groups));
    var values = distinct.map(function (g) { var m = /=(.*)$/.exec(g); return m ? Number(m[1]) : NaN; });
    var numeric = distinct.length > PALETTE.length && values.every(function (v) { return !isNaN(v); });
    var colours = {};
    if (numeric) {
      var order = distinct.slice().sort(function (a, b) { return values[distinct.indexOf(a)] - values[distinct.indexOf(b)]; });
      order.forEach(function (g, i) { colours[g] = ramp(order.length > 1 ? i / (order.length - 1) : 0.5); });
    } else {
      distinct.forEach(function (g, i) { colours[g] = PALETTE[i % PALETTE.length]; });
    }
    return { colours: colours, order: numeric ? distinct.slice().sort(function (a, b) { return values[distinct.indexOf(a)] - values[distinct.indexOf(b)]; }) : distinct };
  }

  // ---- data shaping -----------------------------------------------------------------
  function smooth(ys, w) {
    if (!w) return ys;
    var out = new Array(ys.length), last = 0, n = 0;
    for (var i = 0; i < ys.length; i++) {
      last = last * w + (1 - w) * ys[i];
      n++;
      out[i] = last / (1 - Math.pow(w, n)); // debiased exponential moving average
    }
    return out;
  }
  var MAX_CELLS = 2000000;
  function align(series, w) {
    var union = new Set();
    series.forEach(function (s) { s.x.forEach(function (v) { union.add(v); }); });
    var xs = Array.from(union).sort(function (a, b) { return a - b; });
    var snap = null;
    if (xs.length * Math.max(series.length, 1) > MAX_CELLS && xs.length > 1) {
      var buckets = Math.max(200, Math.floor(MAX_CELLS / series.length));
      var lo = xs[0], hi = xs[xs.length - 1], width = (hi - lo) / buckets || 1;
      snap = function (v) { return lo + Math.round((v - lo) / width) * width; };
      var snapped = new Set(xs.map(snap));
      xs = Array.from(snapped).sort(function (a, b) { return a - b; });
    }
    var index = new Map();
    xs.forEach(function (v, i) { index.set(v, i); });
    var data = [xs];
    series.forEach(function (s) {
      var col = new Array(xs.length).fill(null);
      var ys = smooth(s.y, s.hindsight ? 0 : w);
      for (var i = 0; i < s.x.length; i++) col[index.get(snap ? snap(s.x[i]) : s.x[i])] = ys[i];
      data.push(col);
    });
    return data;
  }

  // ---- charts -----------------------------------------------------------------------
  var AXIS_LABEL = { step: "step", epoch: "epoch", wall: "wall time" };
  function chartOptions(width, height, xAxis, seriesOpts, legend) {
    return {
      width: width, height: height,
      scales: { x: { time: xAxis === "wall" } },
      legend: { show: legend },
      cursor: { focus: { prox: 16 } },
      focus: { alpha: 0.35 },
      axes: [{ label: AXIS_LABEL[xAxis], labelSize: 20, stroke: "#4b5563", grid: { stroke: "#eef0f3" } },
             { stroke: "#4b5563", grid: { stroke: "#eef0f3" }, size: 60 }],
      series: [{ label: AXIS_LABEL[xAxis] }].concat(seriesOpts),
    };
  }
  function seriesOption(s, colour, label) {
    var opt = { label: label, stroke: colour, width: s.hindsight ? 1.6 : 1.4, spanGaps: true,
      points: { show: false } };
    if (s.hindsight) {
      opt.dash = [6, 4];
      opt.points = { show: true, size: 6, stroke: colour, fill: "#fff", width: 1.5 };
    }
    return opt;
  }
  function legendItem(parent, colour, text) {
    var item = document.createElement("span");
    item.className = "item";
    var dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = colour;
    var label = document.createElement("span");
    label.textContent = text;
    item.appendChild(dot);
    item.appendChild(label);
    parent.appendChild(item);
  }
  function query(params) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (k) {
      var v = params[k];
      (Array.isArray(v) ? v : [v]).forEach(function (one) { q.append(k, one); });
    });
    return q.toString();
  }

  function setupExplorer() {
    var root = document.getElementById("charts");
    if (!root || typeof uPlot === "undefined") return;
    var names = JSON.parse(root.dataset.names), runs = JSON.parse(root.dataset.runs);
    var xAxis = root.dataset.x, group = root.dataset.group;
    var weight = parseFloat(root.dataset.smooth) || 0;
    var plots = [];
    var cards = root.querySelectorAll(".chart-card");
    if (!runs.length) {
      cards.forEach(function (c) { c.querySelector(".chart-status").textContent = "no runs selected"; });
      return;
    }
    var url = "/api/metrics?" + query({ names: names, runs: runs, x: xAxis, group: group, max_points: 1000 });
    fetch(url).then(function (r) { return r.json(); }).then(function (data) {
      var groupOf = {};
      data.runs.forEach(function (r) { groupOf[r.run_id] = r.group; });
      var pal = groupColours(data.runs.map(function (r) { return r.group; }));
      function draw() {
        plots.forEach(function (p) { p.destroy(); });
        plots = [];
        cards.forEach(function (card) {
          var name = card.dataset.name;
          var mine = data.series.filter(function (s) { return s.name === name; });
          var status = card.querySelector(".chart-status");
          var holder = card.querySelector(".chart");
          if (!mine.length) { status.textContent = "no numeric values for the selected runs on this axis"; card.dataset.drawn = "empty"; return; }
          var opts = mine.map(function (s) {
            var g = groupOf[s.run_id];
            var label = s.run_id + (g !== s.run_id ? " · " + g : "") + (s.hindsight ? " · hindsight" : "");
            return seriesOption(s, pal.colours[g] || "#555", label);
          });
          var width = Math.max(300, holder.clientWidth || card.clientWidth - 28);
          var plot = new uPlot(chartOptions(width, 300, xAxis, opts, mine.length <= 8), align(mine, weight), holder);
          plots.push(plot);
          var points = 0, shown = 0, hind = 0;
          mine.forEach(function (s) { points += s.points; shown += s.x.length; if (s.hindsight) hind += s.points; });
          status.textContent = mine.length + " series · " + points + " points" +
            (shown < points ? " (" + shown + " drawn after downsampling)" : "") +
            (hind ? " · " + hind + " hindsight points (dashed)" : "");
          card.dataset.drawn = "1";
        });
      }
      draw();
      var legend = document.getElementById("group-legend");
      if (legend && group !== "run") {
        legend.textContent = "";
        var sep = document.createElement("span");
        sep.className = "sep";
        legend.appendChild(sep);
        var title = document.createElement("span");
        title.className = "muted";
        title.textContent = group.replace(/^arg:/, "") + ":";
        legend.appendChild(title);
        pal.order.forEach(function (g) { legendItem(legend, pal.colours[g], g.replace(/^[^=]*=/, "")); });
      }
      var slider = document.getElementById("smooth"), out = document.getElementById("smooth-out");
      if (slider) {
        slider.addEventListener("input", function () {
          weight = parseFloat(slider.value) || 0;
          out.textContent = weight.toFixed(2);
          draw();
          var u = new URL(window.location.href);
          u.searchParams.set("smooth", weight.toFixed(2));
          window.history.replaceState(null, "", u.toString());
        });
      }
      var timer = null;
      window.addEventListener("resize", function () { clearTimeout(timer); timer = setTimeout(draw, 150); });
    }).catch(function (err) {
      cards.forEach(function (c) { c.querySelector(".chart-status").textContent = "could not load data: " + err; });
    });
  }

  function setupRunCharts() {
    var root = document.getElementById("run-charts");
    if (!root || typeof uPlot === "undefined") return;
    var names = JSON.parse(root.dataset.names), run = root.dataset.run;
    fetch("/api/metrics?" + query({ names: names, runs: [run], x: "step", max_points: 400 }))
      .then(function (r) { return r.json(); })
      .then(function (data) {
        root.querySelectorAll("figure.mini").forEach(function (fig) {
          var mine = data.series.filter(function (s) { return s.name === fig.dataset.name; });
          if (!mine.length || mine.every(function (s) { return s.x.length < 2; })) { fig.remove(); return; }
          var holder = fig.querySelector(".chart");
          var opts = mine.map(function (s) { return seriesOption(s, s.hindsight ? "#7b3fc4" : "#2f6fde", s.hindsight ? "hindsight" : "recorded"); });
          new uPlot(chartOptions(Math.max(260, holder.clientWidth || 300), 140, "step", opts, false), align(mine, 0), holder);
          fig.dataset.drawn = "1";
        });
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    setupSelection();
    setupExplorer();
    setupRunCharts();
  });
})();

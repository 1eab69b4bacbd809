// The book's equity and drawdown curves: uPlot (vendored), data from /data/equity,
// redrawn every 5 s. A file of its own: the console's CSP allows no inline script.
(function () {
  "use strict";
  const box = document.getElementById("equity");
  if (!box || typeof uPlot === "undefined") { return; }
  const note = document.getElementById("equity-note");
  const plots = {};
  const width = () => Math.max(320, Math.min(1200, box.clientWidth || 900));

  function draw(id, label, color, x, y, range) {
    const data = [x, y];
    if (plots[id]) { plots[id].setData(data); return; }
    plots[id] = new uPlot({
      width: width(), height: 220, title: label,
      scales: range ? { y: { range: range } } : {},
      series: [{}, { label: label, stroke: color, width: 1.5 }],
      axes: [{}, { size: 70 }],
    }, data, document.getElementById(id));
  }

  // Drawdown is 0 or below: the axis ends at 0 and shows at least 1 %.
  const below = (u, min) => [Math.min(min, -1), 0];

  async function load() {
    let body;
    try {
      const res = await fetch(box.dataset.src, { credentials: "same-origin" });
      body = await res.json();
    } catch (e) {
      note.textContent = "the curve could not be loaded";
      return;
    }
    if (body.problem) {
      note.textContent = body.problem;
    } else if (!body.x.length) {
      note.textContent = "no fill recorded yet: the curve starts with the first fill";
    } else {
      note.textContent = body.x.length + " points · " + body.source;
    }
    box.dataset.points = String(body.x.length);
    if (body.x.length) {
      draw("equity-chart", "equity", "#1d4ed8", body.x, body.equity);
      draw("drawdown-chart", "drawdown %", "#b91c1c", body.x, body.drawdown_pct, below);
    }
  }

  load();
  setInterval(load, 5000);
})();

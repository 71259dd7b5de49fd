// Draws every plotly figure of a course-site page with the site's own plotly.js (assets/).
// A figure is <div class="sa-plotly"><script type="application/json">{data, layout, config}</script></div>.
(function () {
  "use strict";
  function drawAll() {
    var figures = document.querySelectorAll("div.sa-plotly");
    for (var i = 0; i < figures.length; i++) {
      var holder = figures[i];
      var spec = JSON.parse(holder.querySelector("script[type='application/json']").textContent);
      var target = document.createElement("div");
      target.className = "sa-plotly-plot";
      holder.appendChild(target);
      var config = Object.assign({responsive: true, displaylogo: false}, spec.config || {});
      window.Plotly.newPlot(target, spec.data || [], spec.layout || {}, config);
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();

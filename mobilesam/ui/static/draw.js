// mobilesam ui: the canvas: fitting the view, painting the image, masks, prompts and tools.
"use strict";

function fit() {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
  if (!app.img) return;
  const s = Math.min(canvas.width / app.width, canvas.height / app.height);
  app.view = { scale: s, ox: (canvas.width - app.width * s) / 2, oy: (canvas.height - app.height * s) / 2 };
}

function render() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!app.img) return;
  const v = app.view;
  ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
  ctx.imageSmoothingEnabled = v.scale < 1;
  ctx.drawImage(app.img, 0, 0);
  if (app.drawMasks) {
    // The objects not being edited, composited once per change (and per view), then one blit.
    const key = `${app.objects.map((o, i) => (i === app.selected || !o.rle ? "" : `${rleId(o.rle)}:${o.color}`)).join("|")}|${v.scale},${v.ox},${v.oy},${canvas.width},${canvas.height}`;
    if (!app.layer || app.layerKey !== key) {
      app.layer = app.layer || document.createElement("canvas");
      paintLayer(app.layer, v);
      app.layerKey = key;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalAlpha = 0.45;
    ctx.drawImage(app.layer, 0, 0);
    ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
    const sel = app.objects[app.selected];
    if (sel && sel.rle && !(app.edit && app.edit.obj === sel)) { ctx.globalAlpha = 0.6; drawMask(ctx, maskCanvas(sel.rle, sel.color, SELECTED_PX)); }
    if (app.hover && app.hoverOn) { ctx.globalAlpha = 0.35; drawMask(ctx, app.hover); }
  }
  ctx.globalAlpha = 1;
  const px = 1 / v.scale;
  app.objects.forEach((o, i) => {
    if (o.box) {
      ctx.lineWidth = (i === app.selected ? 3 : 2) * px;
      ctx.strokeStyle = `rgb(${o.color})`;
      const [x0, y0, x1, y1] = o.box;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    for (const [x, y, l] of o.points) {
      ctx.beginPath(); ctx.arc(x, y, 6 * px, 0, 2 * Math.PI);
      ctx.fillStyle = l ? "#2ecc40" : "#ff4136"; ctx.fill();
      ctx.lineWidth = 2 * px; ctx.strokeStyle = "#fff"; ctx.stroke();
    }
  });
  if (app.drag && app.drag.box) {
    const [x0, y0, x1, y1] = app.drag.box;
    ctx.setLineDash([6 * px, 4 * px]); ctx.lineWidth = 2 * px; ctx.strokeStyle = "#fff";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0); ctx.setLineDash([]);
  }
  const stroke = app.drag && app.drag.stroke;
  if (stroke) {  // the stroke being drawn, until the server's mask replaces it
    ctx.globalAlpha = 0.5;
    const sel = app.objects[app.selected];
    ctx.strokeStyle = ctx.fillStyle = stroke.mode === "erase" ? "#000" : `rgb(${sel ? sel.color : [255, 255, 255]})`;
    ctx.lineWidth = 2 * stroke.radius; ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    stroke.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (stroke.points.length === 1) ctx.arc(stroke.points[0][0], stroke.points[0][1], stroke.radius, 0, 2 * Math.PI);
    stroke.points.length === 1 ? ctx.fill() : ctx.stroke();
    ctx.globalAlpha = 1;
  }
  if (app.poly) {  // the polygon being drawn: its vertices, and an edge on to the cursor
    const pts = app.cursor ? [...app.poly, app.cursor] : app.poly;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    const color = app.polyErase ? "#ff4136" : "#fff";
    ctx.setLineDash([6 * px, 4 * px]); ctx.lineWidth = 2 * px; ctx.strokeStyle = color; ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = color;
    for (const [x, y] of app.poly) ctx.fillRect(x - 3 * px, y - 3 * px, 6 * px, 6 * px);
  }
  if (app.edit) drawOutline(app.edit, px);
  if ((app.tool === "brush" || app.tool === "eraser") && app.cursor) {  // the brush's outline where it would paint
    ctx.beginPath(); ctx.arc(app.cursor[0], app.cursor[1], app.brush, 0, 2 * Math.PI);
    ctx.lineWidth = 1.5 * px; ctx.strokeStyle = app.tool === "brush" ? "#fff" : "#ff4136"; ctx.stroke();
  }
}

function drawOutline(ed, px) {  // the edited mask as the server will paint it, its outlines and vertices
  const v = app.view;
  const layer = app.editLayer || (app.editLayer = document.createElement("canvas"));
  layer.width = canvas.width; layer.height = canvas.height;  // cleared
  const g = layer.getContext("2d");
  g.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
  g.fillStyle = `rgb(${ed.obj.color})`;
  const path = (c, pts) => { c.beginPath(); pts.forEach(([x, y], i) => (i ? c.lineTo(x, y) : c.moveTo(x, y))); c.closePath(); };
  for (const s of ed.strokes) {  // in order: outlines add, holes erase
    g.globalCompositeOperation = s.mode === "add" ? "source-over" : "destination-out";
    path(g, s.points); g.fill("evenodd");
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.globalAlpha = 0.6; ctx.drawImage(layer, 0, 0); ctx.globalAlpha = 1;
  ctx.setTransform(v.scale, 0, 0, v.scale, v.ox, v.oy);
  ctx.lineWidth = 1.5 * px; ctx.fillStyle = "#fff";
  for (const s of ed.strokes) {
    path(ctx, s.points);
    ctx.strokeStyle = s.mode === "add" ? "#fff" : "#ff4136"; ctx.stroke();
    for (const [x, y] of s.points) ctx.fillRect(x - 2.5 * px, y - 2.5 * px, 5 * px, 5 * px);
  }
}

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  const dpr = canvas.width / r.width;
  const sx = (ev.clientX - r.left) * dpr, sy = (ev.clientY - r.top) * dpr;
  return [(sx - app.view.ox) / app.view.scale, (sy - app.view.oy) / app.view.scale, sx, sy];
}

function inside(x, y) { return x >= 0 && y >= 0 && x < app.width && y < app.height; }

// Reads the canvas pixel drawn over image pixel (x, y): [r, g, b, a]. For tests.
app.pixelAt = (x, y) => {
  const sx = Math.round(x * app.view.scale + app.view.ox), sy = Math.round(y * app.view.scale + app.view.oy);
  return Array.from(ctx.getImageData(sx, sy, 1, 1).data);
};

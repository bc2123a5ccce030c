// mobilesam ui: the panels: objects, candidates, classes, the image list, opening images, segment everything.
"use strict";

function listObjects() {
  const ul = $("objects");
  ul.textContent = "";
  app.objects.forEach((o, i) => {
    const li = document.createElement("li");
    if (i === app.selected) li.className = "selected";
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = `rgb(${o.color})`;
    const input = app.classes ? classSelect(o) : document.createElement("input");
    if (!app.classes) {
      input.value = o.label; input.title = "label";
      input.addEventListener("change", () => { remember(); o.label = input.value || "object"; save(); });
      input.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === "Escape") input.blur(); });
    }
    const del = document.createElement("button");
    del.textContent = "✕"; del.title = "delete";
    del.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(i); });
    li.append(sw, input, del);
    li.addEventListener("click", () => selectObject(i));
    ul.append(li);
  });
}

function selectObject(i) {  // the list's click; Tab / Shift+Tab step through the objects (wrapping)
  const n = app.objects.length;
  if (!n) return;
  app.selected = ((i % n) + n) % n;
  listObjects(); listCandidates(); reoutline(); render();
}

function classSelect(o) {  // the label as one of the classes; new objects take the last one chosen
  const select = document.createElement("select");
  select.title = "class (Shift+1…9, 0: the list's first ten)";
  const names = app.classes.includes(o.label) ? app.classes : [...app.classes, o.label];
  for (const n of names) select.append(new Option(app.classes.includes(n) ? n : `${n} (not a class)`, n));
  select.value = o.label;
  select.addEventListener("change", () => {
    remember(); o.label = app.label = select.value; select.blur(); save();
  });
  return select;
}

function pickClass(i) {  // Shift+1..9, 0: the class of the selected object and of new ones
  if (!app.classes || i >= app.classes.length) return;
  app.label = app.classes[i];
  const obj = app.objects[app.selected];
  if (obj && obj.label !== app.label) { remember(); obj.label = app.label; save(); }
  listObjects();
}

function deleteObject(i) {
  if (i < 0 || i >= app.objects.length) return;
  remember();
  app.objects.splice(i, 1);
  app.selected = Math.min(app.selected, app.objects.length - 1);
  listObjects(); listCandidates(); render(); save();
}

function listCandidates() {
  const div = $("candidates");
  div.textContent = "";
  const obj = app.objects[app.selected];
  if (!obj) return;
  obj.candidates.forEach((c, i) => {
    const b = document.createElement("button");
    const area = c.mask_id === obj.mask_id && obj.area !== undefined ? ` · ${obj.area} px` : "";
    b.textContent = `${i + 1}: mask ${c.mask_id} · IoU ${c.score.toFixed(3)}${area}`;
    if (c.mask_id === obj.mask_id) b.className = "chosen";
    b.addEventListener("click", () => { remember(); choose(obj, c); });
    div.append(b);
  });
}

function stateClass(im) { return im.review ? "review" : im.done ? "done" : ""; }

function markDone(name, done) {  // after a save: a person's, so reviewed
  Object.assign(app.images.find((i) => i.name === name) || {}, { done, review: false });
  drawList();
}

// R: this image's objects are right as they stand (an imported image is saved as
// reviewed); then the next image still to review, after this one in the list.
async function reviewedNext() {
  if (app.saving) await app.saving;
  const i = app.images.findIndex((im) => im.name === app.name);
  if (app.images[i] && app.images[i].review) await save();
  const next = [...app.images.slice(i + 1), ...app.images.slice(0, i)].find((im) => im.review);
  if (next) openImage(next.name);
  else say("no image left to review");
}

// The image list holds rows only for the images in view (and a few either side), each at
// its place in a list as tall as all of them: a folder of 10,000 photos would otherwise
// put 10,000 rows on the page, and every frame would cost twice as much.
const ROW = 50;  // px: a row's height (app.css)
const listItems = new Map();  // image name -> its row, while drawn

async function loadImages() {
  app.images = await api("GET", "/api/images");
  $("image-list").textContent = "";
  listItems.clear();
  drawList();
}

function drawList() {
  const ul = $("image-list"), box = $("images");
  ul.style.height = `${app.images.length * ROW}px`;
  const top = box.scrollTop - ul.offsetTop;
  const first = Math.max(0, Math.floor(top / ROW) - 5);
  const last = Math.min(app.images.length, Math.ceil((top + box.clientHeight) / ROW) + 5);
  const shown = app.images.slice(first, last);
  const keep = new Set(shown.map((im) => im.name));
  for (const [name, li] of listItems) if (!keep.has(name)) { li.remove(); listItems.delete(name); }
  shown.forEach((im, k) => {
    let li = listItems.get(im.name);
    if (!li) { li = listRow(im); listItems.set(im.name, li); }
    li.style.top = `${(first + k) * ROW}px`;
    li.classList.toggle("current", im.name === app.name);
    li.lastChild.className = stateClass(im);
    ul.append(li);  // in list order (a row already there moves, its thumbnail kept)
  });
}

function listRow(im) {
  const li = document.createElement("li");
  li.dataset.name = im.name;
  const t = document.createElement("img");
  t.src = `/api/images/${enc(im.name)}/thumb`; t.alt = "";
  const span = document.createElement("span");
  span.textContent = im.name;
  li.append(t, span);
  li.addEventListener("click", () => openImage(im.name));
  return li;
}

function showInList(name) {  // scrolls the list to the image's row if it is out of view
  const i = app.images.findIndex((im) => im.name === name), box = $("images");
  const y = $("image-list").offsetTop + i * ROW;
  if (i >= 0 && (y < box.scrollTop || y + ROW > box.scrollTop + box.clientHeight)) box.scrollTop = y - box.clientHeight / 2;
  drawList();
}

const imageCache = new Map();  // name -> decoded <img>: the last 4 opened, app.imageCachePx at most
const pixelsOf = (img) => img.naturalWidth * img.naturalHeight;

async function openImage(name) {
  const t0 = performance.now();
  if (app.saving) await app.saving;
  say(`opening ${name}…`);
  try {
    const [info, saved] = await Promise.all([
      api("POST", `/api/images/${enc(name)}/open`),
      api("GET", `/api/images/${enc(name)}/annotations`),
    ]);
    let img = imageCache.get(name);
    if (!img) {
      img = new Image();
      img.src = `/api/images/${enc(name)}/file`;
      await img.decode();
      imageCache.set(name, img);
      let total = [...imageCache.values()].reduce((sum, im) => sum + pixelsOf(im), 0);
      for (const [key, im] of imageCache) {
        if (imageCache.size <= 1 || (imageCache.size <= 4 && total <= app.imageCachePx)) break;
        imageCache.delete(key); total -= pixelsOf(im);
      }
    }
    app.name = name; app.img = img; app.width = info.width; app.height = info.height;
    app.revision = saved.revision;
    app.objects = saved.objects.map(live);
    app.selected = app.objects.length ? 0 : -1;
    app.history = []; app.future = []; app.hover = null; app.poly = null;
    if (app.tool === "vertices") setTool("vertices");  // that image's outline: back to prompts
    $("image-name").textContent = name;
    showInList(name);
    $("export-labels").href = `/api/images/${enc(name)}/export/labels.png`;
    $("export-masks").href = `/api/images/${enc(name)}/export/masks.zip`;
    fit(); render(); listObjects(); listCandidates();
    requestAnimationFrame(() => {
      const ms = performance.now() - t0;
      app.switches.push({ name, ms, cached: info.cached });
      say(`${name}: ${info.width}x${info.height}, ${info.cached ? "embedding cached" : `encoded in ${Math.round(info.encode_ms)} ms`}, shown in ${Math.round(ms)} ms`);
    });
  } catch (e) { say(e.message, true); }
}

function step(delta) {
  const i = app.images.findIndex((im) => im.name === app.name);
  const next = app.images[i + delta];
  if (next) openImage(next.name);
}

// ---------- segment everything ----------

function buildEverythingForm(defaults, precisions) {
  const form = $("everything-form");
  const shown = ["points_per_side", "iou_thres", "stability_score_thres", "box_nms_thres", "min_mask_region_area", "crop_n_layers"];
  for (const k of shown) {
    if (!(k in defaults)) continue;
    const label = document.createElement("label");
    label.textContent = k;
    const input = document.createElement("input");
    input.name = k; input.type = "number"; input.step = "any"; input.value = +defaults[k].toFixed(4);
    label.append(input); form.append(label);
  }
  if (precisions && precisions.length) {  // bf16: approximate, faster where bf16 matmuls are
    const label = document.createElement("label");
    label.textContent = "decoder_precision";
    const select = document.createElement("select");
    select.name = "decoder_precision";
    for (const p of precisions) select.append(new Option(p, p));
    label.append(select); form.append(label);
  }
  form.addEventListener("submit", (e) => e.preventDefault());
}

async function runEverything() {
  if (!app.name) return;
  const options = {};
  for (const input of $("everything-form").querySelectorAll("input")) options[input.name] = Number(input.value);
  for (const select of $("everything-form").querySelectorAll("select")) options[select.name] = select.value;
  const progress = $("everything-progress");
  const t0 = performance.now();
  const name = app.name;
  const timer = setInterval(async () => {  // the server's count of point prompts done
    const p = await api("GET", `/api/images/${enc(name)}/everything/progress`).catch(() => null);
    const share = p && p.total ? ` ${Math.round((100 * p.done) / p.total)}% (${p.done}/${p.total} points)` : "";
    progress.textContent = `running…${share} ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  }, 250);
  $("everything").disabled = true;
  try {
    const out = await api("POST", `/api/images/${enc(app.name)}/everything`, options);
    remember();
    for (const m of out.masks) {
      newObject();
      Object.assign(app.objects[app.selected], { rle: m.rle, score: m.score, mask_id: 0, source: "everything" });
    }
    progress.textContent = `${out.masks.length} masks in ${out.seconds.toFixed(1)} s`;
    listObjects(); render(); save();
  } catch (e) { progress.textContent = ""; say(e.message, true); }
  finally { clearInterval(timer); $("everything").disabled = false; }
}

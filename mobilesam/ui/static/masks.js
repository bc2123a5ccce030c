// mobilesam ui: masks, COCO compressed RLE -> canvas (painted runs, cached canvases, colours).
"use strict";

function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// The selected object's mask (and the hover preview) is drawn from a canvas of at most
// `most` pixels, scaled up to the image (nearest neighbour): the selected one gets up to
// SELECTED_PX (every pixel of a 24 MP photo), the preview MASK_PX; the cache keeps at most
// CACHE_PX pixels of them. (Full-size canvases for every object took 3.9 GB of the
// browser for 40 objects on a 24 MP photo: the others go to `paintLayer`.)
const MASK_PX = 4e6, SELECTED_PX = 24e6, CACHE_PX = 64e6;

// Image column x of a mask n columns wide, shown at `scale` from `offset` in a target
// `most` columns wide, covers target columns [first[x], first[x + 1]) (nearest neighbour:
// target column X shows image column floor((X + 0.5 - offset) / scale)); rows likewise.
function spans(n, scale, offset, most) {
  return Int32Array.from({ length: n + 1 }, (_, x) => Math.max(0, Math.min(most, Math.ceil(x * scale + offset - 0.5))));
}

// A mask's runs (column-major, of an h-row mask) painted into px, W wide: the target
// rectangle of every mask pixel set to value.
function paintRuns(counts, h, px, W, firstX, firstY, value) {
  let p = 0;
  for (let i = 0; i < counts.length; i++) {
    const end = p + counts[i];
    if (i % 2 === 1) {
      while (p < end) {  // one column segment at a time
        const x = Math.floor(p / h), y = p - x * h, n = Math.min(end - p, h - y);
        const y0 = firstY[y], y1 = firstY[y + n];
        for (let sx = firstX[x]; sx < firstX[x + 1]; sx++) {
          for (let sy = y0, idx = y0 * W + sx; sy < y1; sy++, idx += W) px[idx] = value;
        }
        p += n;
      }
    }
    p = end;
  }
}

const rgba = ([r, g, b]) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;  // a colour as one pixel, little-endian

const rleIds = new WeakMap();  // each mask object (a new one per server answer) -> a number
function rleId(rle) {
  if (!rleIds.has(rle)) rleIds.set(rle, rleIds.next = (rleIds.next || 0) + 1);
  return rleIds.get(rle);
}

const maskCache = new Map();  // size + colour + counts -> canvas, the most recent (CACHE_PX, 64 at most)
let cachedPx = 0;

function maskCanvas(rle, color, most = MASK_PX) {
  const [h, w] = rle.size;
  const f = Math.min(1, Math.sqrt(most / (w * h)));
  const cw = Math.max(1, Math.round(w * f)), ch = Math.max(1, Math.round(h * f));
  const key = `${cw}x${ch}|${color}|${rle.counts}`;
  const hit = maskCache.get(key);
  if (hit) { maskCache.delete(key); maskCache.set(key, hit); return hit; }
  const c = document.createElement("canvas");
  c.width = cw; c.height = ch;
  const g = c.getContext("2d");
  const data = g.createImageData(cw, ch);
  paintRuns(decodedCounts(rle), h, new Uint32Array(data.data.buffer), cw, spans(w, cw / w, 0, cw), spans(h, ch / h, 0, ch), rgba(color));
  g.putImageData(data, 0, 0);
  maskCache.set(key, c);
  cachedPx += cw * ch;
  while (maskCache.size > 64 || (cachedPx > CACHE_PX && maskCache.size > 1)) {
    const [oldest, old] = maskCache.entries().next().value;
    maskCache.delete(oldest);
    cachedPx -= old.width * old.height;
  }
  return c;
}

// The objects not being edited, painted straight into one layer the size of the screen:
// each mask's runs sampled at the screen's pixels (nearest), later objects over earlier
// ones. No canvas per object: 40 objects on a 24 MP photo cost one screen of pixels.
function paintLayer(layer, v) {
  layer.width = canvas.width; layer.height = canvas.height;  // cleared
  const W = layer.width, H = layer.height;
  const objects = app.objects.filter((o, i) => i !== app.selected && o.rle);
  if (!objects.length) return;
  const [h, w] = objects[0].rle.size;
  const firstX = spans(w, v.scale, v.ox, W), firstY = spans(h, v.scale, v.oy, H);
  const g = layer.getContext("2d");
  const data = g.createImageData(W, H);
  const px = new Uint32Array(data.data.buffer);
  for (const o of objects) paintRuns(decodedCounts(o.rle), h, px, W, firstX, firstY, rgba(o.color));
  g.putImageData(data, 0, 0);
}

const countsOf = new WeakMap();  // each mask object -> its decoded runs
function decodedCounts(rle) {
  if (!countsOf.has(rle)) countsOf.set(rle, rleCounts(rle.counts));
  return countsOf.get(rle);
}

function drawMask(g, c) { g.drawImage(c, 0, 0, app.width, app.height); }  // a mask canvas over the image

function colorOf(i) {  // distinct hues, golden-ratio steps
  const hue = (i * 0.618033988749895) % 1;
  const f = (n) => {
    const k = (n + hue * 12) % 12;
    return Math.round(255 * (0.55 - 0.45 * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

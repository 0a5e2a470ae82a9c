// lenet5's reader in the page: pixels -> MNIST-style 28x28 inputs -> LeNet-5 -> probabilities.
//
// The steps are the Python package's, one for one, so the page reads a drawing as `lenet5 serve`
// does: images.py (one digit), numbers.py (a whole number) and model.py (the forward pass). Where
// the Python steps are Pillow's 8-bit resizes, they are reproduced here to the bit; the rest is
// float64 arithmetic in numpy's order. tests/test_web_static.py holds the two side by side.
//
// Plain JavaScript: the whole forward pass is about 0.3 million multiply-adds, well under a
// millisecond, so WebAssembly or a runtime would add size and a build step and save nothing.
// A classic script, not a module, so the page also works opened from disk (file://).
(function (root) {
  "use strict";

  const WORK_SIZE = 256; // images.WORK_SIZE: the ink is found at this size (longest side)
  const SHORT_SIDE = 128; // images.SHORT_SIDE: shrinking keeps this much across the short side
  const MIN_CONTRAST = 0.15;
  const MIN_SIZE = 5;
  const STROKE = 2.8;

  class ImageError extends Error {
    // noDigit: the picture was read and holds no digit ("no ink"): an answer, not an error
    constructor(message, noDigit = "") { super(message); this.noDigit = noDigit; }
  }

  // ---- small helpers, as Python and numpy compute them -----------------------------------------

  // Python's round(): halves go to the even neighbour.
  function pyRound(x) {
    return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x);
  }

  // The k-th smallest of `a` (a scratch copy, reordered): Hoare's selection, linear time on average.
  function select(a, k) {
    let lo = 0, hi = a.length - 1;
    while (hi > lo) {
      const pivot = a[(lo + hi) >> 1];
      let i = lo, j = hi;
      while (i <= j) {
        while (a[i] < pivot) i++;
        while (a[j] > pivot) j--;
        if (i <= j) { const t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
      }
      if (k <= j) hi = j;
      else if (k >= i) lo = i;
      else return a[k];
    }
    return a[k];
  }

  // np.median: the middle value, or the mean of the two middle values.
  function median(values) {
    const a = Float64Array.from(values);
    const n = a.length;
    if (n % 2) return select(a, (n - 1) / 2);
    const upper = select(a, n / 2); // everything before n/2 is now no larger
    let lower = -Infinity;
    for (let i = 0; i < n / 2; i++) if (a[i] > lower) lower = a[i];
    return (lower + upper) / 2;
  }

  // np.percentile(values, q) with its default (linear) method, numpy's own interpolation formula.
  function percentile(values, q) {
    const s = Float64Array.from(values).sort();
    const at = (q / 100) * (s.length - 1);
    const lo = Math.floor(at);
    const hi = Math.min(lo + 1, s.length - 1);
    const t = at - lo;
    const d = s[hi] - s[lo];
    return t >= 0.5 ? s[hi] - d * (1 - t) : s[lo] + d * t;
  }

  function maxOf(a) {
    let m = -Infinity;
    for (let i = 0; i < a.length; i++) if (a[i] > m) m = a[i];
    return m;
  }

  // ---- Pillow's resize of 8-bit pictures (Resample.c), bit for bit -----------------------------

  function sinc(x) {
    if (x === 0) return 1;
    x *= Math.PI;
    return Math.sin(x) / x;
  }
  const LANCZOS = { support: 3, f: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) };
  const BOX = { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) };
  const PRECISION = 1 << 22; // 32 - 8 - 2 bits: the fixed point of the coefficients

  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize;
    const filterScale = Math.max(scale, 1);
    const support = filter.support * filterScale;
    const ksize = Math.ceil(support) * 2 + 1;
    const kk = new Int32Array(outSize * ksize);
    const bounds = new Int32Array(outSize * 2);
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const xmin = Math.max(0, Math.trunc(center - support + 0.5));
      const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
      let ww = 0;
      const weights = new Float64Array(xmax);
      for (let x = 0; x < xmax; x++) {
        weights[x] = filter.f((x + xmin - center + 0.5) / filterScale);
        ww += weights[x];
      }
      for (let x = 0; x < xmax; x++) {
        const k = ww !== 0 ? weights[x] / ww : weights[x];
        kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * PRECISION : 0.5 + k * PRECISION);
      }
      bounds[2 * xx] = xmin;
      bounds[2 * xx + 1] = xmax;
    }
    return { kk, bounds, ksize };
  }

  // The sums are int32, wrapping as Pillow's C does; the top bits are the 8-bit value.
  function clip8(ss) {
    const v = ss >> 22;
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  // One pass across: (w x h) -> (outW x h).
  function across(src, w, h, outW, filter) {
    const { kk, bounds, ksize } = coefficients(w, outW, filter);
    const out = new Uint8Array(outW * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < outW; x++) {
        const n = bounds[2 * x + 1], k0 = x * ksize, at = y * w + bounds[2 * x];
        let ss = PRECISION >> 1;
        for (let i = 0; i < n; i++) ss = (ss + src[at + i] * kk[k0 + i]) | 0;
        out[y * outW + x] = clip8(ss);
      }
    }
    return out;
  }

  // One pass down: (w x h) -> (w x outH).
  function down(src, w, h, outH, filter) {
    const { kk, bounds, ksize } = coefficients(h, outH, filter);
    const out = new Uint8Array(w * outH);
    const ss = new Int32Array(w);
    for (let y = 0; y < outH; y++) {
      const n = bounds[2 * y + 1], k0 = y * ksize, first = bounds[2 * y];
      ss.fill(PRECISION >> 1);
      for (let i = 0; i < n; i++) { // row by row: the rows are read in order
        const k = kk[k0 + i], row = (first + i) * w;
        for (let x = 0; x < w; x++) ss[x] = (ss[x] + src[row + x] * k) | 0;
      }
      for (let x = 0; x < w; x++) out[y * w + x] = clip8(ss[x]);
    }
    return out;
  }

  // A gray picture {w, h, px: Uint8Array} resized as Pillow's Image.resize does it.
  function resize(img, outW, outH, filter) {
    let { w, h, px } = img;
    if (outW !== w) {
      px = across(px, w, h, outW, filter);
      w = outW;
    }
    if (outH !== h) {
      px = down(px, w, h, outH, filter);
      h = outH;
    }
    return { w, h, px: px === img.px ? px.slice() : px };
  }

  // ---- a picture to gray (images.open_image's _to_gray and _shrink) ----------------------------

  // RGBA pixels (an ImageData's) -> gray {w, h, px}. Transparency is put on white paper (on black
  // when the visible strokes are light), as Pillow's alpha_composite does; gray is ITU-R 601-2 luma
  // in Pillow's fixed point.
  function toGray(rgba, w, h) {
    const n = w * h;
    const lum = new Uint8Array(n);
    let seeThrough = false, opaque = 0, opaqueLum = 0;
    for (let i = 0; i < n; i++) {
      const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2], a = rgba[4 * i + 3];
      lum[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
      if (a < 255) seeThrough = true;
      if (a > 127) { opaque++; opaqueLum += lum[i]; }
    }
    if (!seeThrough) return { w, h, px: lum };
    const lightStrokes = opaque > 0 && opaque < 0.5 * n && opaqueLum / opaque > 127;
    const paper = lightStrokes ? 0 : 255;
    const over = (s, a) => {
      const t = 128 * (s * a + paper * (255 - a)) + (0x80 << 7);
      return (((t >>> 8) + t) >>> 8) >>> 7;
    };
    const px = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const a = rgba[4 * i + 3];
      if (a === 0) { px[i] = paper; continue; }
      const r = over(rgba[4 * i], a), g = over(rgba[4 * i + 1], a), b = over(rgba[4 * i + 2], a);
      px[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
    }
    return { w, h, px };
  }

  // A big picture averaged down to between 2 and 4 times the working size (images._shrink).
  function shrink(img) {
    const factor = Math.min(Math.floor(Math.max(img.w, img.h) / (2 * WORK_SIZE)),
      Math.floor(Math.min(img.w, img.h) / SHORT_SIDE)); // images._shrink: a long row keeps its height
    if (factor < 2) return img;
    return resize(img, Math.max(1, pyRound(img.w / factor)), Math.max(1, pyRound(img.h / factor)), BOX);
  }

  // ---- the ink (images.ink_map) ----------------------------------------------------------------

  function otsu(values) {
    const hist = new Float64Array(256);
    for (let i = 0; i < values.length; i++) hist[Math.min(Math.trunc(values[i] * 256), 255)]++;
    const total = Math.max(values.length, 1);
    const omega = new Float64Array(256), mu = new Float64Array(256);
    let o = 0, m = 0;
    for (let k = 0; k < 256; k++) {
      const p = hist[k] / total;
      o += p;
      m += p * k;
      omega[k] = o;
      mu[k] = m;
    }
    let best = -Infinity, at = 0;
    for (let k = 0; k < 256; k++) {
      const d = mu[255] * omega[k] - mu[k];
      const between = (d * d) / Math.max(omega[k] * (1 - omega[k]), 1e-12);
      if (between > best) { best = between; at = k; }
    }
    return (at + 1) / 256;
  }

  function lightPaper(a, w, h) {
    if (median(a) > 0.5) return true;
    if (Math.min(w, h) < 3) return false;
    const edge = [];
    for (let x = 0; x < w; x++) edge.push(a[x]);
    for (let x = 0; x < w; x++) edge.push(a[(h - 1) * w + x]);
    for (let y = 1; y < h - 1; y++) edge.push(a[y * w]);
    for (let y = 1; y < h - 1; y++) edge.push(a[y * w + w - 1]);
    const level = Math.max(otsu(a), 0.25);
    const dark = edge.filter((v) => v < level).length;
    return median(edge) > 0.5 && dark / edge.length >= 0.02;
  }

  // Least squares by the normal equations, solved by elimination: A (rows of k numbers), z -> k
  // coefficients.
  function leastSquares(rows, zs) {
    const k = rows[0].length;
    const A = Array.from({ length: k }, () => new Float64Array(k + 1));
    rows.forEach((r, i) => {
      for (let p = 0; p < k; p++) {
        for (let q = 0; q < k; q++) A[p][q] += r[p] * r[q];
        A[p][k] += r[p] * zs[i];
      }
    });
    for (let c = 0; c < k; c++) {
      let piv = c;
      for (let r = c + 1; r < k; r++) if (Math.abs(A[r][c]) > Math.abs(A[piv][c])) piv = r;
      [A[c], A[piv]] = [A[piv], A[c]];
      for (let r = 0; r < k; r++) {
        if (r === c) continue;
        const f = A[r][c] / A[c][c];
        for (let q = c; q <= k; q++) A[r][q] -= f * A[c][q];
      }
    }
    return Array.from({ length: k }, (_, c) => A[c][k] / A[c][c]);
  }

  // The plane z = c0*y + c1*x + c2 nearest the points, as images._ink fits it with
  // np.linalg.lstsq: to the heights above the first point's (an even sheet fits slopes of exactly
  // 0), and when the points lie on one row (or one column), the line along it, its offset shared
  // between c0 (or c1) and c2 as lstsq's least-norm solution shares it.
  function fitPlane(ys, xs, heights) {
    const z0 = heights[0], zs = heights.map((z) => z - z0);
    let c;
    const oneRow = ys.every((y) => y === ys[0]), oneColumn = xs.every((x) => x === xs[0]);
    if (oneRow || oneColumn) {
      const along = oneRow ? xs : ys, at = oneRow ? ys[0] : xs[0];
      const [slope, offset] = leastSquares(along.map((v) => [v, 1]), zs);
      const shared = [offset * at / (at * at + 1), offset / (at * at + 1)];
      c = oneRow ? [shared[0], slope, shared[1]] : [slope, shared[0], shared[1]];
    } else {
      c = leastSquares(ys.map((y, i) => [y, xs[i], 1]), zs);
    }
    return [c[0], c[1], c[2] + z0];
  }

  function inkOf(gray, name) {
    const { w, h, px } = gray;
    const a = new Float64Array(px.length);
    for (let i = 0; i < a.length; i++) a[i] = px[i] / 255;
    if (lightPaper(a, w, h)) for (let i = 0; i < a.length; i++) a[i] = 1 - a[i];
    const level = Math.max(otsu(a), median(a));
    let count = 0;
    for (let i = 0; i < a.length; i++) if (a[i] <= level) count++;
    if (count >= 3) {
      const step = Math.max(1, Math.floor(count / 4000));
      const ys = [], xs = [], zs = [];
      for (let i = 0, seen = 0; i < a.length; i++) {
        if (a[i] <= level) {
          if (seen % step === 0) { ys.push(Math.floor(i / w)); xs.push(i % w); zs.push(a[i]); }
          seen++;
        }
      }
      const [cy, cx, c0] = fitPlane(ys, xs, zs);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) a[y * w + x] -= cy * y + cx * x + c0;
      }
    }
    for (let i = 0; i < a.length; i++) if (a[i] < 0) a[i] = 0;
    const top = maxOf(a);
    if (top < MIN_CONTRAST) throw new ImageError(`${name}: no ink found (the picture is blank or has almost no contrast)`, "no ink");
    for (let i = 0; i < a.length; i++) a[i] /= top;
    return a;
  }

  function speckled(mask, w, h) {
    let alone = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!mask[y * w + x]) continue;
        let n = 0;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w) n += mask[yy * w + xx];
          }
        }
        if (n <= 2) alone++;
      }
    }
    return alone > Math.max(20, 0.001 * mask.length);
  }

  // Pillow's MedianFilter(3): the 5th of the 9 values round each pixel, edges repeated.
  function median3(gray) {
    const { w, h, px } = gray;
    const out = new Uint8Array(w * h);
    const win = new Uint8Array(9);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let k = 0;
        for (let dy = -1; dy <= 1; dy++) {
          const yy = Math.min(Math.max(y + dy, 0), h - 1);
          for (let dx = -1; dx <= 1; dx++) win[k++] = px[yy * w + Math.min(Math.max(x + dx, 0), w - 1)];
        }
        out[y * w + x] = win.sort()[4];
      }
    }
    return { w, h, px: out };
  }

  // A gray picture -> {ink (0..1 per pixel), level, w, h} at `work` pixels on its longest side.
  function inkMap(gray, name, work = WORK_SIZE) {
    if (Math.max(gray.w, gray.h) > work) {
      const scale = work / Math.max(gray.w, gray.h);
      gray = resize(gray, Math.max(1, pyRound(gray.w * scale)), Math.max(1, pyRound(gray.h * scale)), LANCZOS);
    }
    let ink = inkOf(gray, name);
    let level = Math.max(otsu(ink), 0.25);
    if (Math.min(gray.w, gray.h) >= 3 && speckled(inkMasks({ ink, level }).strong, gray.w, gray.h)) {
      ink = inkOf(median3(gray), name); // salt-and-pepper noise: a median filter clears it
      level = Math.max(otsu(ink), 0.25);
    }
    return { ink, level, w: gray.w, h: gray.h };
  }

  function inkMasks(map) {
    const { ink, level } = map;
    const faint = Math.max(0.5 * level, 0.12);
    const strong = new Uint8Array(ink.length), weak = new Uint8Array(ink.length);
    for (let i = 0; i < ink.length; i++) {
      strong[i] = ink[i] > level ? 1 : 0;
      weak[i] = ink[i] > faint ? 1 : 0;
    }
    return { strong, weak };
  }

  // ---- regions of ink (images.regions, candidates, _select_digit) ------------------------------

  // 8-connected regions of `mask`, numbered 1..n in the order a raster scan meets them.
  function label(mask, w, h) {
    const parent = new Int32Array(w * h + 1);
    const labels = new Int32Array(w * h);
    let next = 1;
    const find = (a) => {
      while (parent[a] !== a) a = parent[a] = parent[parent[a]];
      return a;
    };
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i]) continue;
        let mine = 0;
        const around = [x > 0 ? i - 1 : -1, y > 0 && x > 0 ? i - w - 1 : -1, y > 0 ? i - w : -1,
          y > 0 && x < w - 1 ? i - w + 1 : -1];
        for (const j of around) {
          if (j < 0 || !labels[j]) continue;
          const r = find(labels[j]);
          if (!mine) mine = r;
          else if (r !== mine) {
            const lo = Math.min(r, mine), hi = Math.max(r, mine);
            parent[hi] = lo;
            mine = lo;
          }
        }
        if (!mine) { mine = next; parent[next] = next; next++; }
        labels[i] = mine;
      }
    }
    // Final numbers in the order each region's first pixel comes in the scan.
    const final = new Int32Array(next);
    let n = 0;
    for (let i = 0; i < labels.length; i++) {
      if (!labels[i]) continue;
      const r = find(labels[i]);
      if (!final[r]) final[r] = ++n;
      labels[i] = final[r];
    }
    return { labels, n };
  }

  function regions(strong, weak, w, h) {
    const { labels, n } = label(weak, w, h);
    const areas = new Int32Array(n + 1), clear = new Uint8Array(n + 1);
    const top = new Int32Array(n + 1).fill(h), bottom = new Int32Array(n + 1).fill(-1);
    const left = new Int32Array(n + 1).fill(w), right = new Int32Array(n + 1).fill(-1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const l = labels[y * w + x];
        if (!l) continue;
        areas[l]++;
        if (strong[y * w + x]) clear[l] = 1;
        if (y < top[l]) top[l] = y;
        if (y > bottom[l]) bottom[l] = y;
        if (x < left[l]) left[l] = x;
        if (x > right[l]) right[l] = x;
      }
    }
    const ids = [];
    for (let l = 1; l <= n; l++) if (clear[l] && areas[l] >= 3) ids.push(l);
    return {
      labels, n, w, h, ids,
      areas: ids.map((l) => areas[l]),
      boxes: ids.map((l) => [top[l], bottom[l], left[l], right[l]]),
    };
  }

  // The pixels of the regions whose numbers are in `ids`.
  function regionMask(r, ids) {
    const keep = new Uint8Array(r.n + 1);
    for (const l of ids) keep[l] = 1;
    keep[0] = 0;
    const out = new Uint8Array(r.labels.length);
    for (let i = 0; i < out.length; i++) out[i] = keep[r.labels[i]];
    return out;
  }

  function candidates(r) {
    const { areas, boxes, w, h } = r;
    const k = areas.length;
    const margin = 2;
    const largest = Math.max(...areas);
    const big = [];
    for (let i = 0; i < k; i++) if (areas[i] >= 0.02 * largest) big.push(i);
    const framing = new Array(k).fill(false);
    for (const a of big) {
      framing[a] = big.some((b) => boxes[b][0] > boxes[a][0] && boxes[b][1] < boxes[a][1] &&
        boxes[b][2] > boxes[a][2] && boxes[b][3] < boxes[a][3] && areas[b] >= 0.05 * areas[a]);
    }
    let allowed = boxes.map((b, i) => !(b[0] < margin || b[1] >= h - margin || b[2] < margin ||
      b[3] >= w - margin || framing[i]));
    if (!big.some((i) => allowed[i])) { // the digit itself touches the edge (a tight crop)
      allowed = big.some((i) => !framing[i]) ? framing.map((f) => !f) : new Array(k).fill(true);
    }
    return { allowed, big };
  }

  function selectDigit(strong, weak, w, h) {
    const r = regions(strong, weak, w, h);
    if (!r.ids.length) return new Uint8Array(w * h);
    const { allowed } = candidates(r);
    const { boxes, areas } = r;
    const kept = new Array(areas.length).fill(false);
    let first = 0, most = -Infinity;
    areas.forEach((a, i) => {
      const v = allowed[i] ? a : -1;
      if (v > most) { most = v; first = i; }
    });
    kept[first] = true;
    for (;;) {
      let top = Infinity, left = Infinity, bottom = -Infinity, right = -Infinity;
      boxes.forEach((b, i) => {
        if (!kept[i]) return;
        top = Math.min(top, b[0]); bottom = Math.max(bottom, b[1]);
        left = Math.min(left, b[2]); right = Math.max(right, b[3]);
      });
      const reach = 0.25 * Math.max(bottom - top, right - left) + 2;
      const near = boxes.map((b, i) => allowed[i] && !kept[i] && b[0] <= bottom + reach &&
        b[1] >= top - reach && b[2] <= right + reach && b[3] >= left - reach);
      if (!near.some(Boolean)) return regionMask(r, r.ids.filter((_, i) => kept[i]));
      near.forEach((v, i) => { if (v) kept[i] = true; });
    }
  }

  // ---- one digit's pixels -> the 28x28 input (images.to_mnist) ----------------------------------

  function inkBox(mask, w, h) {
    let top = h, bottom = -1, left = w, right = -1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!mask[y * w + x]) continue;
        if (y < top) top = y;
        bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
    return bottom < 0 ? null : [top, bottom, left, right];
  }

  // `box`, when known, is the mask's own bounds (top, bottom, left, right), spared a search.
  function toMnist(map, mask, name, box = null) {
    const { ink, w: W } = map;
    const b = box || inkBox(mask, map.w, map.h);
    const [top, bottom, left, right] = b ? [b[0], b[1] + 1, b[2], b[3] + 1] : [0, 0, 0, 0];
    if (Math.max(bottom - top, right - left) < MIN_SIZE) {
      throw new ImageError(`${name}: no digit found, only a speck of ink; if the digit is tiny in the ` +
        "picture, crop closer to it", "only a speck of ink");
    }
    let h = bottom - top, w = right - left;
    const m = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) m[y * w + x] = mask[(top + y) * W + left + x];
    // The anti-aliased rim just outside the threshold is kept; everything else outside the digit not.
    let crop = new Float64Array(w * h);
    const inDigit = [];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let near = 0;
        for (let dy = -1; dy <= 1 && !near; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w && m[yy * w + xx]) { near = 1; break; }
          }
        }
        const v = near ? ink[(top + y) * W + left + x] : 0;
        crop[y * w + x] = v;
        if (m[y * w + x]) inDigit.push(v);
      }
    }
    const solid = percentile(inDigit, 90);
    crop = crop.map((v) => Math.min(Math.max(v / solid, 0), 1));
    let longSide = Math.max(h, w);
    // Stroke width ~ area / half the boundary; a fine pen on a big sheet would vanish at 20x20.
    let area = 0, edge = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!m[y * w + x]) continue;
        area++;
        const inside = y > 0 && m[(y - 1) * w + x] && y < h - 1 && m[(y + 1) * w + x] &&
          x > 0 && m[y * w + x - 1] && x < w - 1 && m[y * w + x + 1];
        if (!inside) edge++;
      }
    }
    const width = area / Math.max(edge / 2, 1) * 20.0 / longSide;
    if (width < 0.7 * STROKE) {
      const grow = pyRound((STROKE - width) * longSide / 20.0);
      // Grey dilation by a (grow+1)-square, as scipy's maximum_filter: across, then down.
      const size = grow + 1, before = Math.floor(size / 2);
      const gw = w + 2 * grow, gh = h + 2 * grow;
      const across = new Float64Array(gw * h), grown = new Float64Array(gw * gh);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < gw; x++) {
          let v = 0;
          for (let d = -before; d < size - before; d++) {
            const xx = x + d - grow; // in the unpadded crop
            if (xx >= 0 && xx < w && crop[y * w + xx] > v) v = crop[y * w + xx];
          }
          across[y * gw + x] = v;
        }
      }
      for (let y = 0; y < gh; y++) {
        for (let x = 0; x < gw; x++) {
          let v = 0;
          for (let d = -before; d < size - before; d++) {
            const yy = y + d - grow;
            if (yy >= 0 && yy < h && across[yy * gw + x] > v) v = across[yy * gw + x];
          }
          grown[y * gw + x] = v;
        }
      }
      crop = grown; w = gw; h = gh;
      longSide = Math.max(h, w);
    }
    const scale = 20.0 / longSide;
    const newW = Math.max(1, pyRound(w * scale)), newH = Math.max(1, pyRound(h * scale));
    const bytes = new Uint8Array(w * h);
    for (let i = 0; i < bytes.length; i++) bytes[i] = crop[i] * 255; // truncated, as numpy's astype
    const d = resize({ w, h, px: bytes }, newW, newH, LANCZOS).px;
    let total = 0, sy = 0, sx = 0;
    for (let y = 0; y < newH; y++) {
      for (let x = 0; x < newW; x++) {
        const v = d[y * newW + x];
        total += v; sy += y * v; sx += x * v;
      }
    }
    if (total <= 0) throw new ImageError(`${name}: no ink found`, "no ink");
    let oy = pyRound(14 - sy / total), ox = pyRound(14 - sx / total); // MNIST's centre of mass: (14, 14)
    oy = Math.min(Math.max(oy, 0), 28 - newH);
    ox = Math.min(Math.max(ox, 0), 28 - newW);
    const field = new Uint8Array(28 * 28);
    for (let y = 0; y < newH; y++) for (let x = 0; x < newW; x++) field[(oy + y) * 28 + ox + x] = d[y * newW + x];
    return field;
  }

  // A gray picture -> its digit's 28x28 input (images.prepare).
  function prepare(gray, name = "image") {
    const map = inkMap(gray, name);
    const { strong, weak } = inkMasks(map);
    return toMnist(map, selectDigit(strong, weak, map.w, map.h), name);
  }

  // ---- LeNet-5 (model.py): conv 1->6 5x5, max-pool 2, conv 6->16 5x5, max-pool 2, 256->120->84->10 ---

  // The weights as a model file of `lenet5 export --format web` gives them: base64 of little-endian
  // float32 tensors, one after another in `layout` order ([name, shape] pairs).
  function loadModel(spec) {
    const bytes = Uint8Array.from(atob(spec.weights), (c) => c.charCodeAt(0));
    const all = new Float32Array(bytes.buffer);
    const tensors = {};
    let at = 0;
    for (const [name, shape] of spec.layout) {
      const size = shape.reduce((a, b) => a * b, 1);
      tensors[name] = Float64Array.from(all.subarray(at, at + size)); // float64 sums read float64 fastest
      at += size;
    }
    if (at !== all.length) throw new Error(`the model holds ${all.length} numbers, its layout ${at}`);
    return { ...spec, tensors };
  }

  // Valid 5x5 convolution, then 2x2 max-pool, then ReLU (as model.py orders them). Each output
  // pixel's 5x5 patches (all input channels) are laid out in a row first, so every output is one
  // contiguous dot product with its filter.
  const scratch = new Map(); // working arrays by length, reused: a forward pass allocates nothing big

  function reused(length) {
    if (!scratch.has(length)) scratch.set(length, new Float64Array(length));
    return scratch.get(length);
  }

  // `from`, when given, is filled with the conv output each pooled one came from (for the
  // backward pass of `explain`): the first of equal ones, as torch's max-pool picks it.
  function convPool(x, inC, size, weight, bias, outC, from = null) {
    const conv = size - 4, half = conv / 2, K = inC * 25;
    const patches = reused(conv * conv * K);
    for (let y = 0; y < conv; y++) {
      for (let xx = 0; xx < conv; xx++) {
        let at = (y * conv + xx) * K;
        for (let i = 0; i < inC; i++) {
          for (let ky = 0; ky < 5; ky++) {
            const row = i * size * size + (y + ky) * size + xx;
            for (let kx = 0; kx < 5; kx++) patches[at++] = x[row + kx];
          }
        }
      }
    }
    const out = new Float64Array(outC * half * half);
    const c = reused(conv * conv);
    for (let o = 0; o < outC; o++) {
      const w0 = o * K;
      for (let p = 0; p < conv * conv; p++) {
        c[p] = bias[o] + dot(weight, w0, patches, p * K, K);
      }
      for (let y = 0; y < half; y++) {
        for (let xx = 0; xx < half; xx++) {
          const p = 2 * y * conv + 2 * xx;
          const v = Math.max(c[p], c[p + 1], c[p + conv], c[p + conv + 1]);
          const at = (o * half + y) * half + xx;
          out[at] = v > 0 ? v : 0;
          if (from) {
            const won = c[p] === v ? p : c[p + 1] === v ? p + 1 : c[p + conv] === v ? p + conv : p + conv + 1;
            from[at] = o * conv * conv + won;
          }
        }
      }
    }
    return out;
  }

  function linear(x, weight, bias, relu) {
    const n = bias.length, k = x.length;
    const out = new Float64Array(n);
    for (let o = 0; o < n; o++) {
      const s = bias[o] + dot(weight, o * k, x, 0, k);
      out[o] = relu && s < 0 ? 0 : s;
    }
    return out;
  }

  // a[i..i+n) . b[j..j+n), in four running sums: independent additions keep the CPU's adders busy.
  function dot(a, i, b, j, n) {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, k = 0;
    for (; k + 3 < n; k += 4) {
      s0 += a[i + k] * b[j + k];
      s1 += a[i + k + 1] * b[j + k + 1];
      s2 += a[i + k + 2] * b[j + k + 2];
      s3 += a[i + k + 3] * b[j + k + 3];
    }
    for (; k < n; k++) s0 += a[i + k] * b[j + k];
    return (s0 + s1) + (s2 + s3);
  }

  // A 28x28 uint8 input (white ink on black) -> the 10 logits.
  function logits(model, input) {
    const x = new Float64Array(784);
    for (let i = 0; i < 784; i++) x[i] = (input[i] / 255 - model.mean) / model.std;
    return forward(model, x);
  }

  // Normalised pixels (784) -> the 10 logits; `kept`, when given, gets what `gradient` needs.
  function forward(model, x, kept = null) {
    const t = model.tensors;
    const aFrom = kept && new Int32Array(6 * 12 * 12), bFrom = kept && new Int32Array(16 * 4 * 4);
    const a = convPool(x, 1, 28, t["conv1.weight"], t["conv1.bias"], 6, aFrom); // (6, 12, 12)
    const b = convPool(a, 6, 12, t["conv2.weight"], t["conv2.bias"], 16, bFrom); // (16, 4, 4)
    const c = linear(b, t["fc1.weight"], t["fc1.bias"], true); // 120
    const d = linear(c, t["fc2.weight"], t["fc2.bias"], true); // 84
    if (kept) Object.assign(kept, { a, aFrom, b, bFrom, c, d });
    return Array.from(linear(d, t["fc3.weight"], t["fc3.bias"], false));
  }

  // ---- why: integrated gradients from the blank picture (explain.py, which says why) -----------

  const STEPS = 32; // explain.STEPS: points on the path from the blank picture to the input

  // d logits[digit] / d pixels (784, normalised) at the input `kept` holds: the forward pass run
  // backwards, through each ReLU where it let the value through, each max-pool to the conv output
  // that won it, each layer's weights transposed.
  function gradient(model, kept, digit) {
    const t = model.tensors;
    let g = t["fc3.weight"].subarray(84 * digit, 84 * digit + 84); // d logit / d fc2's output
    g = linearBack(g, kept.d, t["fc2.weight"], 120);
    g = linearBack(g, kept.c, t["fc1.weight"], 256);
    g = convPoolBack(g, kept.b, kept.bFrom, t["conv2.weight"], 6, 12, 16);
    return convPoolBack(g, kept.a, kept.aFrom, t["conv1.weight"], 1, 28, 6);
  }

  // g: d/d a linear layer's output after its ReLU (`out`) -> d/d its input (k numbers).
  function linearBack(g, out, weight, k) {
    const back = new Float64Array(k);
    for (let o = 0; o < out.length; o++) {
      if (!(out[o] > 0)) continue;
      const go = g[o], w0 = o * k;
      for (let i = 0; i < k; i++) back[i] += go * weight[w0 + i];
    }
    return back;
  }

  // g: d/d convPool's output (`out`, `from` as it kept them) -> d/d its input (inC, size, size).
  function convPoolBack(g, out, from, weight, inC, size, outC) {
    const conv = size - 4, K = inC * 25;
    const back = new Float64Array(inC * size * size);
    for (let at = 0; at < out.length; at++) {
      if (!(out[at] > 0) || g[at] === 0) continue;
      const o = Math.floor(from[at] / (conv * conv)), p = from[at] % (conv * conv);
      const y = Math.floor(p / conv), xx = p % conv;
      for (let i = 0; i < inC; i++) {
        for (let ky = 0; ky < 5; ky++) {
          const row = i * size * size + (y + ky) * size + xx, w = o * K + i * 25 + ky * 5;
          for (let kx = 0; kx < 5; kx++) back[row + kx] += g[at] * weight[w + kx];
        }
      }
    }
    return back;
  }

  // Which pixels of a 28x28 uint8 input spoke for each of `digits` and which against: for each, a
  // 28x28 map of each pixel's part in the digit's logit, adding up to logit - blank (the logit
  // of the picture with no ink). The shape /api/predict?explain=true answers with, but for each
  // digit's probability, which the caller knows.
  function explain(model, input, digits, steps = STEPS) {
    const base = -model.mean / model.std; // the blank picture, normalised
    const x = new Float64Array(784), point = new Float64Array(784);
    for (let i = 0; i < 784; i++) x[i] = (input[i] / 255 - model.mean) / model.std;
    const sums = digits.map(() => new Float64Array(784));
    for (let s = 0; s < steps; s++) {
      const alpha = (s + 0.5) / steps; // the midpoint rule
      for (let i = 0; i < 784; i++) point[i] = base + alpha * (x[i] - base);
      const kept = {};
      forward(model, point, kept);
      digits.forEach((digit, k) => {
        const g = gradient(model, kept, digit);
        for (let i = 0; i < 784; i++) sums[k][i] += g[i];
      });
    }
    const z = forward(model, x), zBlank = forward(model, new Float64Array(784).fill(base));
    return {
      method: `integrated gradients from the blank picture, ${steps} steps`,
      digits: digits.map((digit, k) => {
        const map = [];
        for (let y = 0; y < 28; y++) {
          const row = [];
          for (let xx = 0; xx < 28; xx++) row.push((x[28 * y + xx] - base) * sums[k][28 * y + xx] / steps);
          map.push(row);
        }
        return { digit, logit: z[digit], blank: zBlank[digit], map };
      }),
    };
  }

  function softmax(z) {
    const top = Math.max(...z);
    const e = z.map((v) => Math.exp(v - top));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  }

  // Calibrated probabilities, the logits divided by the model's temperature, and the score "not a
  // digit" is decided on, the top probability at temperature 1 (reader.py's Calibration; 1 and a
  // threshold of 0.5 for a model.js written without one).
  function read(model, input) {
    const z = logits(model, input);
    const t = model.temperature || 1;
    return { p: softmax(z.map((v) => v / t)), score: Math.max(...softmax(z)) };
  }

  function threshold(model) {
    return typeof model.threshold === "number" ? model.threshold : 0.5;
  }

  // One digit, answered as /api/predict answers: digit, probability, is_digit, reason,
  // probabilities, the 28x28 image. A picture with no ink is "no digit" (reason "no ink").
  function readDigit(model, gray, name = "image") {
    let input, reason = "";
    try {
      input = prepare(gray, name);
    } catch (err) {
      if (!(err instanceof ImageError) || !err.noDigit) throw err;
      input = new Uint8Array(784);
      reason = err.noDigit;
    }
    const { p: probabilities, score } = read(model, input);
    const digit = probabilities.indexOf(Math.max(...probabilities));
    const image = [];
    for (let y = 0; y < 28; y++) image.push(Array.from(input.subarray(28 * y, 28 * y + 28)));
    let inked = 0;
    for (let i = 0; i < 784; i++) inked += input[i] >= 64;
    if (!reason && inked < 4) reason = "no ink";
    if (!reason && score < threshold(model)) reason = "unlike any digit";
    return { digit, probability: probabilities[digit], is_digit: !reason, reason, score, probabilities, image };
  }

  // ---- a whole number (numbers.py) --------------------------------------------------------------

  // Widths and heights in units of a digit's height, as numbers.py has them (its comments say why).
  const ONE_DIGIT = 1.2, WIDEST = 2.0, NARROWEST = 0.12, OVERLAP = 0.5, NEAR = 0.04, SPECK = 0.15;
  const THIN = 0.3, DRIFT = 0.3, SPACING = 0.25, MAX_CUTS = 8, MAX_PARTS = 6;
  const PER_GAP = 8.0, PER_CUT = 10.0, SHORT = 10.0, MIN_HEIGHT = 40, MAX_WORK = 1536;
  const NOT_DIGIT = 6.0, IN_A_NUMBER = 0.75; // numbers.py: a piece that is no digit, and inside a number
  const ASPECTS = [0.05, 0.15, 1.05, 1.2, 1.4, 1.6];
  const LOG_SHARE = [-3.0, 0.0, 0.0, -1.0, -2.5, -4.0];

  // Square dilation by `r` pixels (r 3x3 steps), nothing beyond the edges.
  function dilate(mask, w, h, r) {
    const across = new Uint8Array(w * h), out = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!mask[y * w + x]) continue;
        for (let xx = Math.max(0, x - r); xx <= Math.min(w - 1, x + r); xx++) across[y * w + xx] = 1;
      }
    }
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!across[y * w + x]) continue;
        for (let yy = Math.max(0, y - r); yy <= Math.min(h - 1, y + r); yy++) out[yy * w + x] = 1;
      }
    }
    return out;
  }

  function partOf(mask, w, h, extra = {}) {
    const b = inkBox(mask, w, h);
    return b && { mask, box: b, cutLeft: false, cutRight: false, cutInk: 0, ...extra };
  }

  // The parts digits are made of, left to right, and the tallest one's height (numbers._parts).
  function parts(map, name) {
    const { w, h } = map;
    const { strong, weak } = inkMasks(map);
    const r = regions(strong, weak, w, h);
    if (!r.ids.length) throw new ImageError(`${name}: no digits found, only specks of ink`);
    const { allowed } = candidates(r);
    const boxes = r.boxes;
    const heights = boxes.map((b) => b[1] - b[0] + 1), widths = boxes.map((b) => b[3] - b[2] + 1);
    let tallest = Math.max(...heights.filter((_, i) => allowed[i]));
    const keep = boxes.map((_, i) => allowed[i] && Math.max(heights[i], widths[i]) >= Math.max(SPECK * tallest, MIN_SIZE));
    // Marks well above or below the line of digits are not part of the number.
    let lineAt = 0, most = -Infinity;
    heights.forEach((v, i) => { const k = keep[i] ? v : -1; if (k > most) { most = k; lineAt = i; } });
    const line = boxes[lineAt], reach = 0.25 * tallest;
    boxes.forEach((b, i) => { keep[i] = keep[i] && b[0] <= line[1] + reach && b[1] >= line[0] - reach; });
    if (!keep.some(Boolean)) throw new ImageError(`${name}: no digits found, only specks of ink`);
    // Regions within a few pixels of each other are strokes of one digit, broken where ink was faint.
    const near = Math.max(1, pyRound(NEAR * tallest));
    const kept = [];
    keep.forEach((k, i) => { if (k) kept.push(i); });
    const thick = label(dilate(regionMask(r, kept.map((i) => r.ids[i])), w, h, near), w, h).labels;
    const together = new Map();
    for (const i of kept) {
      const [top, bottom, left, right] = boxes[i];
      let first = -1;
      for (let y = top; y <= bottom && first < 0; y++) {
        for (let x = left; x <= right; x++) if (r.labels[y * w + x] === r.ids[i]) { first = y * w + x; break; }
      }
      const t = thick[first];
      if (!together.has(t)) together.set(t, []);
      together.get(t).push(i);
    }
    const groups = [...together.values()].map((ids) => [ids, [
      Math.min(...ids.map((i) => boxes[i][0])), Math.max(...ids.map((i) => boxes[i][1])),
      Math.min(...ids.map((i) => boxes[i][2])), Math.max(...ids.map((i) => boxes[i][3]))]]);
    let merged = true;
    while (merged) { // merge while any two share enough columns
      merged = false;
      for (let a = 0; a < groups.length && !merged; a++) {
        for (let b = a + 1; b < groups.length; b++) {
          const ba = groups[a][1], bb = groups[b][1];
          const shared = Math.min(ba[3], bb[3]) - Math.max(ba[2], bb[2]) + 1;
          if (shared >= OVERLAP * Math.min(ba[3] - ba[2] + 1, bb[3] - bb[2] + 1)) {
            groups[a] = [groups[a][0].concat(groups[b][0]), [Math.min(ba[0], bb[0]), Math.max(ba[1], bb[1]),
              Math.min(ba[2], bb[2]), Math.max(ba[3], bb[3])]];
            groups.splice(b, 1);
            merged = true;
            break;
          }
        }
      }
    }
    let out = [];
    for (const [ids, box] of groups) {
      out = out.concat(cut({ mask: regionMask(r, ids.map((i) => r.ids[i])), box, cutLeft: false,
        cutRight: false, cutInk: 0 }, w, h));
    }
    out.sort((p, q) => p.box[2] - q.box[2]); // stable, as Python's sort
    tallest = Math.max(...out.map((p) => p.box[1] - p.box[0] + 1));
    return { parts: out, tallest };
  }

  // A part wider than one digit cut along the paths from top to bottom that cross least ink
  // (numbers._cut: seam carving, one row at a time, a step sideways allowed at a small cost).
  function cut(part, W, H) {
    const [top, bottom, left, right] = part.box;
    const height = bottom - top + 1, width = right - left + 1;
    if (width <= ONE_DIGIT * height) return [part];
    const sub = (y, x) => part.mask[(top + y) * W + left + x];
    let cost = new Float64Array(width);
    for (let x = 0; x < width; x++) cost[x] = sub(0, x);
    const moves = new Int8Array(height * width);
    for (let y = 1; y < height; y++) {
      const next = new Float64Array(width);
      for (let x = 0; x < width; x++) {
        const came = [x > 0 ? cost[x - 1] + DRIFT : Infinity, cost[x], x < width - 1 ? cost[x + 1] + DRIFT : Infinity];
        let step = 0;
        if (came[1] < came[step]) step = 1;
        if (came[2] < came[step]) step = 2;
        moves[y * width + x] = step - 1; // where the path came from, relative to this column
        next[x] = came[step] + sub(y, x);
      }
      cost = next;
    }
    const edge = Math.max(1, Math.trunc(NARROWEST * height));
    const order = [];
    for (let x = edge; x < width - edge; x++) order.push(x);
    order.sort((a, b) => cost[a] - cost[b] || a - b);
    const ends = [];
    for (const x of order) {
      if (cost[x] > THIN * height) break; // the rest cross more ink: through a digit, not between two
      if (ends.every((e) => Math.abs(x - e) >= Math.max(2, SPACING * height))) ends.push(x);
      if (ends.length === MAX_CUTS) break;
    }
    ends.sort((a, b) => a - b);
    const seams = [], crossed = [];
    for (const x of ends) {
      crossed.push(cost[x] / height);
      const path = new Int32Array(height);
      path[height - 1] = x;
      for (let y = height - 1; y > 0; y--) path[y - 1] = path[y] + moves[y * width + path[y]];
      seams.push(path);
    }
    const limits = [new Int32Array(height)].concat(seams, [new Int32Array(height).fill(width)]);
    const out = [];
    for (let k = 0; k < limits.length - 1; k++) {
      const mask = new Uint8Array(W * H);
      for (let y = 0; y < height; y++) {
        for (let x = limits[k][y]; x < limits[k + 1][y]; x++) mask[(top + y) * W + left + x] = sub(y, x);
      }
      const piece = partOf(mask, W, H, { cutLeft: k > 0, cutRight: k < limits.length - 2,
        cutInk: k < crossed.length ? crossed[k] : 0 });
      if (piece) out.push(piece);
    }
    return out;
  }

  // `mask` less slivers of a neighbour that a cut left behind, when a side of it is a cut (numbers._trim).
  function trim(mask, box, W, H, cutLeft, cutRight) {
    if (!(cutLeft || cutRight)) return [mask, box];
    const [top, bottom, left, right] = box;
    const w = right - left + 1, h = bottom - top + 1;
    const sub = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) sub[y * w + x] = mask[(top + y) * W + left + x];
    const { labels, n } = label(sub, w, h);
    const areas = new Int32Array(n + 1);
    for (const l of labels) areas[l]++;
    areas[0] = 0;
    const largest = Math.max(...areas);
    const small = Array.from(areas, (a, l) => l > 0 && a < 0.1 * largest);
    if (!small.some(Boolean)) return [mask, box];
    const out = mask.slice();
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (small[labels[y * w + x]]) out[(top + y) * W + left + x] = 0;
    return [out, inkBox(out, W, H)];
  }

  function widthPrior(x) { // np.interp over MNIST's widths, and falling fast past the widest
    if (x > ASPECTS[ASPECTS.length - 1]) return LOG_SHARE[LOG_SHARE.length - 1] - 10.0 * (x - ASPECTS[ASPECTS.length - 1]);
    if (x <= ASPECTS[0]) return LOG_SHARE[0];
    let i = 1;
    while (x > ASPECTS[i]) i++;
    const t = (x - ASPECTS[i - 1]) / (ASPECTS[i] - ASPECTS[i - 1]);
    return LOG_SHARE[i - 1] + t * (LOG_SHARE[i] - LOG_SHARE[i - 1]);
  }

  // The digits, left to right, as [box, input, probabilities]: the runs of parts that read best
  // as digits, chosen by dynamic programming (numbers._read_line).
  function readLine(model, map, found, tallest, name) {
    const { w: W, h: H, } = map;
    const cands = [];
    for (let i = 0; i < found.length; i++) {
      const mask = found[i].mask.slice();
      let [top, bottom, left, right] = found[i].box;
      let gaps = 0;
      for (let j = i + 1; j <= Math.min(found.length, i + MAX_PARTS); j++) {
        if (j > i + 1) {
          const nxt = found[j - 1];
          gaps += Math.max(0, nxt.box[2] - right - 1);
          for (let y = nxt.box[0]; y <= nxt.box[1]; y++) {
            for (let x = nxt.box[2]; x <= nxt.box[3]; x++) mask[y * W + x] |= nxt.mask[y * W + x];
          }
          top = Math.min(top, nxt.box[0]); bottom = Math.max(bottom, nxt.box[1]);
          left = Math.min(left, nxt.box[2]); right = Math.max(right, nxt.box[3]);
        }
        const height = bottom - top + 1, width = right - left + 1;
        const [digitMask, box] = trim(mask, [top, bottom, left, right], W, H, found[i].cutLeft, found[j - 1].cutRight);
        let input;
        try {
          input = toMnist(map, digitMask, name, box);
        } catch (e) {
          if (e instanceof ImageError) continue; // a sliver of ink: no digit
          throw e;
        }
        const penalty = PER_GAP * gaps / tallest - widthPrior(width / height) +
          SHORT * Math.max(0, 0.5 - height / tallest) + PER_CUT * found[j - 1].cutInk;
        cands.push({ i, j, box, input, penalty, ...read(model, input) });
      }
    }
    if (!cands.length) throw new ImageError(`${name}: no digits found, only specks of ink`);
    const best = [0].concat(new Array(found.length).fill(-Infinity));
    const back = new Array(found.length + 1).fill(null);
    const lenient = threshold(model) * IN_A_NUMBER;
    cands.forEach((c, k) => { // in order of i: best[i] is final
      const unlike = c.score >= lenient ? 0 : NOT_DIGIT;
      const score = best[c.i] + Math.log(Math.max(Math.max(...c.p), 1e-12)) - c.penalty - unlike;
      if (score > best[c.j]) { best[c.j] = score; back[c.j] = k; }
    });
    if (back[found.length] === null) throw new ImageError(`${name}: no digits found, only specks of ink`);
    const chosen = [];
    for (let j = found.length; j;) { chosen.push(back[j]); j = cands[back[j]].i; }
    chosen.reverse();
    chosen.forEach((k, n) => {
      const [top, bottom, left, right] = cands[k].box;
      if (right - left + 1 > WIDEST * (bottom - top + 1)) {
        throw new ImageError(`${name}: could not split: digits ${n + 1} and ${n + 2} touch over their ` +
          "whole height; leave a gap between them");
      }
    });
    return chosen.map((k) => cands[k]);
  }

  // A gray picture of a number -> as /api/number answers: the number and each digit with its box
  // ([x0, y0, x1, y1] in the pixels of a picture `full` = [width, height] in size, default its own).
  function readNumber(model, gray, name = "image", full = null) {
    let work = WORK_SIZE;
    let map = inkMap(gray, name, work);
    let found = parts(map, name);
    const larger = Math.min(MAX_WORK, Math.max(gray.w, gray.h), pyRound(work * 1.5 * MIN_HEIGHT / found.tallest));
    if (found.tallest < MIN_HEIGHT && larger >= 1.25 * work) {
      work = larger; // small digits in a big picture: look again with more pixels
      map = inkMap(gray, name, work);
      found = parts(map, name);
    }
    const digits = readLine(model, map, found.parts, found.tallest, name);
    const [fullW, fullH] = full || [gray.w, gray.h];
    const sx = fullW / map.w, sy = fullH / map.h;
    const out = digits.map((c) => {
      const [top, bottom, left, right] = c.box;
      const digit = c.p.indexOf(Math.max(...c.p));
      return {
        digit, probability: c.p[digit], probabilities: c.p,
        is_digit: c.score >= threshold(model) * IN_A_NUMBER,
        box: [Math.max(0, Math.floor(left * sx)), Math.max(0, Math.floor(top * sy)),
          Math.min(fullW, Math.ceil((right + 1) * sx)), Math.min(fullH, Math.ceil((bottom + 1) * sy))],
        input: c.input,
      };
    });
    const bad = out.map((d, k) => (d.is_digit ? 0 : k + 1)).filter((k) => k);
    const wide = bad.filter((k) => {
      const [x0, y0, x1, y1] = out[k - 1].box;
      return (x1 - x0) / Math.max(1, y1 - y0) > ONE_DIGIT;
    });
    const s = (list) => (list.length > 1 ? "s" : "");
    const problem = !bad.length ? ""
      : wide.length ? `digits touch in part${s(wide)} ${wide.join(", ")} of ${out.length}; leave a gap between them`
        : `part${s(bad)} ${bad.join(", ")} of ${out.length} not a digit`;
    return { number: out.map((d) => (d.is_digit ? d.digit : "?")).join(""), readable: !bad.length,
      problem, digits: out };
  }

  // What the page (app.js) and its checks use; the steps inside stay private.
  root.Lenet5Reader = { ImageError, toGray, shrink, prepare, loadModel, logits, readDigit, readNumber, explain };
  if (typeof module !== "undefined") module.exports = root.Lenet5Reader;
})(typeof window !== "undefined" ? window : globalThis);

// lenet5's drawing page: pointer drawing (mouse, touch, pen), uploads, and showing the answer.
// Two modes: "digit" (a square pad) and "number" (a pad 3x as wide, the boxes the drawing was
// split into drawn over it). Two readers, picked once: through the server (`lenet5 serve`: the
// canvas is sent as a PNG to api/predict or api/number and prepared as `lenet5 predict FILE` does)
// or in the page (`lenet5 export --format web`: static/model.js holds the weights and reader.js,
// the same steps ported, reads the pad's pixels). Both answer in the API's JSON shapes, shown by
// the same code. When a stroke ends (or a picture is uploaded) a digit's reading comes with its why
// view: for the digit read and the two runners-up, which pixels spoke for it and which against
// (api/predict?explain=true, or reader.js's `explain` in the page); while drawing, without it.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const statusLine = document.getElementById("status");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const bars = document.getElementById("bars");
const seen = document.getElementById("seen");
const modelLine = document.getElementById("model");
const hint = document.getElementById("hint");
const numberEl = document.getElementById("number");
const digitsList = document.getElementById("digits");
const boxes = document.getElementById("boxes");
const why = document.getElementById("why");

const PAD_WIDTH = { digit: 280, number: 840 }; // pixels sent; the height is always 280
const ENDPOINT = { digit: "api/predict", number: "api/number" }; // relative: the page's own server
const HINT = {
  digit: "Draw a digit in the white box to see what LeNet-5 reads.",
  number: "Write a number of a few digits, side by side, in the white box.",
};

const THROTTLE_MS = 200; // while drawing, ask at most this often
let drawing = false;
let last = null;
let inFlight = false;
let queued = null; // the next request to send when the current one answers
let generation = 0; // bumped by Clear, so answers to older requests are dropped
let timer = null;

for (let d = 0; d <= 9; d++) {
  const li = document.createElement("li");
  li.innerHTML = `<span class="label">${d}</span><span class="track"><span class="fill"></span></span>` +
                 `<span class="pct"></span>`;
  bars.appendChild(li);
}

// The why view: a small map for the digit read and for each runner-up, with its label.
const whyCells = [0, 1, 2].map(() => {
  const cell = document.createElement("div");
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  const label = document.createElement("span");
  cell.append(canvas, label);
  document.getElementById("why-maps").appendChild(cell);
  return { cell, canvas, label };
});
let whyShown = false; // a why view is drawn (it stays, dimmed, while the next stroke is read)

function blank() {
  ctx.fillStyle = "#fff"; // paper, not transparency: the server reads what a photo would show
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * pad.width / r.width, (event.clientY - r.top) * pad.height / r.height];
}

function stroke(from, to) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 22;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = point(event);
  stroke(last, last); // a tap leaves a dot
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const p = point(event);
  stroke(last, p);
  last = p;
  if (timer === null) timer = setTimeout(() => { timer = null; predictPad(false); }, THROTTLE_MS);
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  clearTimeout(timer);
  timer = null;
  predictPad(true);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function mode() {
  return document.body.dataset.mode;
}

function clearAll() {
  generation++;
  queued = null;
  blank();
  show(null);
  setStatus("");
}

document.getElementById("clear").addEventListener("click", clearAll);

// Switching mode starts again: the pad takes the mode's shape (resizing a canvas blanks it).
document.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener("change", () => {
  document.body.dataset.mode = radio.value;
  pad.width = PAD_WIDTH[radio.value];
  hint.textContent = HINT[radio.value];
  clearAll();
}));

document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  generation++;
  blank();
  send(() => reader.file(file, true), false);
  event.target.value = ""; // choosing the same file again still counts
});

// withWhy: the why view too (a digit's, at the end of a stroke)
function predictPad(withWhy) {
  return send(() => reader.pad(withWhy), true);
}

// A picture that cannot be read (not an image, no ink, ...): its reason is shown instead of an answer.
class Unreadable extends Error {}

// Reading through the server: the picture is posted, the answer is the API's JSON.
const serverReader = {
  pad: (withWhy) => new Promise((resolve) => pad.toBlob(resolve, "image/png"))
    .then((png) => ask(png, "drawing.png", withWhy)),
  file: (file, withWhy) => ask(file, file.name, withWhy),
};

async function ask(body, name, withWhy) {
  const form = new FormData();
  form.append("file", body, name);
  const url = ENDPOINT[mode()] + (withWhy && mode() === "digit" ? "?explain=true" : "");
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch (err) {
    throw new Error(`no answer from the server (${err.message})`);
  }
  const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
  if (!response.ok) throw new Unreadable(answer.detail || `HTTP ${response.status}`);
  return answer;
}

// Reading in the page: pixels -> gray -> reader.js, as the server does it for the same pixels.
const MAX_PIXELS = 100000000; // images.MAX_PIXELS: larger pictures are refused, as there
const pageReader = {
  pad: async (withWhy) => readGray(Lenet5Reader.toGray(ctx.getImageData(0, 0, pad.width, pad.height).data,
                                                       pad.width, pad.height), "drawing.png", withWhy),
  file: async (file, withWhy) => {
    let bitmap;
    try { // pixels as the file has them (no colour profile applied), as Pillow reads them
      bitmap = await createImageBitmap(file, { colorSpaceConversion: "none" });
    } catch (err) {
      throw new Unreadable(`${file.name}: not an image file lenet5 reads (one this browser can decode)`);
    }
    const { width, height } = bitmap;
    if (width * height > MAX_PIXELS) {
      bitmap.close();
      throw new Unreadable(`${file.name}: too large to be a digit picture (over ${MAX_PIXELS / 1e6} ` +
                           `megapixels); scale it down first (${width}x${height})`);
    }
    // Transparent, not white, under the picture: toGray puts see-through parts on paper as the
    // server does (white, or black under light strokes).
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const c = canvas.getContext("2d", { willReadFrequently: true });
    c.drawImage(bitmap, 0, 0);
    bitmap.close();
    const gray = Lenet5Reader.toGray(c.getImageData(0, 0, width, height).data, width, height);
    return readGray(Lenet5Reader.shrink(gray), file.name, withWhy);
  },
};

function readGray(gray, name, withWhy) {
  let answer;
  try {
    if (mode() === "number") return Lenet5Reader.readNumber(model, gray, name);
    answer = Lenet5Reader.readDigit(model, gray, name);
  } catch (err) {
    throw err instanceof Lenet5Reader.ImageError ? new Unreadable(err.message) : err;
  }
  if (withWhy) answer.explain = explained(answer);
  return answer;
}

// The why view of a digit's answer, as the server gives it: the read digit and the two runners-up
// (most probable first, the lower digit first among equals, as numpy's stable sort has them).
function explained(answer) {
  const p = answer.probabilities;
  const nothing = answer.reason && answer.reason !== "unlike any digit"; // no ink, a speck: no maps
  const top = nothing ? [] : [...p.keys()].sort((a, b) => p[b] - p[a] || a - b).slice(0, 3);
  const why = Lenet5Reader.explain(model, Uint8Array.from(answer.image.flat()), top);
  why.digits.forEach((d) => { d.probability = p[d.digit]; });
  return why;
}

// static/model.js decides: the weights (an exported page) or null (the served page's stub).
const model = window.LENET5_MODEL && typeof window.LENET5_MODEL === "object"
  ? Lenet5Reader.loadModel(window.LENET5_MODEL) : null;
const reader = model ? pageReader : serverReader;

// One reading at a time; while one is out, only the newest waiting one is kept.
// fromPad: the picture is the pad's, so boxes in its pixels can be drawn over it.
// body[data-reading] stands while a reading is out or waiting: the shown answer may not be the last.
async function send(read, fromPad) {
  document.body.dataset.reading = "";
  if (inFlight) { queued = [read, fromPad]; return; }
  inFlight = true;
  const mine = generation;
  try {
    const answer = await read();
    if (mine !== generation) return;
    show(answer, fromPad);
    setStatus("");
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof Unreadable) show(null);
    setStatus(err.message, true);
  } finally {
    inFlight = false;
    if (queued) { const next = queued; queued = null; send(...next); } else delete document.body.dataset.reading;
  }
}

function setStatus(text, error = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", error);
}

// An answer of either endpoint, or null to show none; the other mode's parts are emptied.
function show(answer, fromPad = true) {
  const number = answer && "number" in answer;
  showDigit(number ? null : answer);
  showNumber(number ? answer : null, fromPad);
  document.body.dataset.state = answer ? "answered" : "empty";
}

// A probability as a percentage that is never a certainty either way (reader.py's chance).
function pct(p) {
  const text = (100 * p).toFixed(1);
  if (Number(text) >= 100) return ">99.9 %";
  if (Number(text) <= 0) return "<0.1 %";
  return `${text} %`;
}

function showDigit(answer) {
  const digit = !answer || answer.is_digit !== false;
  digitEl.textContent = answer ? (digit ? String(answer.digit) : "\u2205") : "?";
  digitEl.classList.toggle("not-digit", !digit);
  confidenceEl.textContent = !answer ? ""
    : digit ? `${pct(answer.probability)} sure`
      : answer.reason === "no ink" ? "no digit: no ink"
        : `not a digit (closest: ${answer.digit}, ${pct(answer.probability)})`;
  bars.querySelectorAll("li").forEach((li, d) => {
    const p = answer ? answer.probabilities[d] : 0;
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".pct").textContent = answer ? pct(p) : "";
    li.classList.toggle("best", Boolean(answer) && d === answer.digit);
  });
  const sctx = seen.getContext("2d");
  const img = sctx.createImageData(28, 28);
  if (answer) {
    answer.image.flat().forEach((v, i) => {
      img.data.set([v, v, v, 255], 4 * i);
    });
  }
  sctx.putImageData(img, 0, 0);
  showWhy(answer);
}

// Red where the ink spoke for the digit, blue where against, on one scale for the three maps (a
// runner-up's pale map is weak evidence), over the input's ink in light gray.
function showWhy(answer) {
  const maps = answer && answer.explain ? answer.explain.digits : null;
  if (!answer || (maps && !maps.length)) whyShown = false;
  else if (maps) whyShown = true;
  why.classList.toggle("none", !whyShown);
  why.classList.toggle("stale", whyShown && !maps);
  if (!maps || !maps.length) return;
  const scale = Math.max(1e-6, ...maps.flatMap((m) => m.map.flat().map(Math.abs)));
  const ink = answer.image.flat();
  whyCells.forEach(({ cell, canvas, label }, k) => {
    const m = maps[k];
    cell.hidden = !m;
    if (!m) return;
    const c = canvas.getContext("2d");
    const img = c.createImageData(28, 28);
    m.map.flat().forEach((v, i) => {
      const t = Math.max(-1, Math.min(1, v / scale));
      const paper = 255 - 60 * ink[i] / 255;
      const colour = t >= 0 ? [214, 39, 40] : [33, 102, 172];
      const a = Math.sqrt(Math.abs(t)); // a few strong pixels would leave the rest too pale to see
      img.data.set([...colour.map((x) => paper + (x - paper) * a), 255], 4 * i);
    });
    c.putImageData(img, 0, 0);
    label.textContent = `${k ? "or" : "read"} ${m.digit}: ${pct(m.probability)}`;
  });
}

function percent(answerDigit) {
  return answerDigit.is_digit === false ? `not a digit (${pct(answerDigit.probability)})`
    : pct(answerDigit.probability);
}

function showNumber(answer, fromPad) {
  const digits = answer ? answer.digits : [];
  numberEl.textContent = answer ? answer.number + (answer.problem ? ` \u2014 could not read: ${answer.problem}` : "") : "?";
  digitsList.replaceChildren(...digits.map((d) => {
    const li = document.createElement("li");
    li.innerHTML = `<span class="label">${d.is_digit === false ? "?" : d.digit}</span><span class="pct">${percent(d)}</span>`;
    return li;
  }));
  // Boxes are in the picture's pixels; as fractions of the pad they follow its on-screen size.
  boxes.replaceChildren(...(fromPad ? digits : []).map((d) => {
    const [x0, y0, x1, y1] = d.box;
    const div = document.createElement("div");
    div.className = "box";
    div.dataset.digit = d.digit;
    div.textContent = d.digit;
    div.title = `${d.digit}: ${percent(d)}`;
    Object.assign(div.style, {
      left: `${100 * x0 / pad.width}%`, top: `${100 * y0 / pad.height}%`,
      width: `${100 * (x1 - x0) / pad.width}%`, height: `${100 * (y1 - y0) / pad.height}%`,
    });
    return div;
  }));
}

// Which checkpoint answers, and how well it did on the MNIST test set when that is known: from
// the model in the page, or from the server's api/health.
async function describeModel() {
  const line = (about, where) => {
    const accuracy = typeof about.test_accuracy === "number"
      ? `${(100 * about.test_accuracy).toFixed(2)} % on the MNIST test set`
      : "test accuracy not known";
    modelLine.textContent = `model: ${about.name} \u00b7 ${accuracy}${where}`;
  };
  if (model) {
    line(model, " \u00b7 read in this page, no server");
    document.querySelectorAll(".server-only").forEach((el) => { el.hidden = true; });
    return;
  }
  try {
    const response = await fetch("api/health");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    line(await response.json(), "");
  } catch (err) {
    modelLine.textContent = `model: unknown (no answer from api/health: ${err.message})`;
  }
}

blank();
show(null);
describeModel();

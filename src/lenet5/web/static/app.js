// lenet5's drawing page: pointer drawing (mouse, touch, pen), uploads, and showing the answer.
// The canvas is sent as a PNG; the server prepares it exactly as `lenet5 predict FILE` does.
// Two modes: "digit" (a square pad, /api/predict) and "number" (a pad 3x as wide, /api/number,
// the boxes it split the drawing into drawn over the pad).
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

const PAD_WIDTH = { digit: 280, number: 840 }; // pixels sent; the height is always 280
const ENDPOINT = { digit: "/api/predict", number: "/api/number" };
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
  if (timer === null) timer = setTimeout(() => { timer = null; predictPad(); }, THROTTLE_MS);
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  clearTimeout(timer);
  timer = null;
  predictPad();
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
  send(async () => file, file.name, false);
  event.target.value = ""; // choosing the same file again still counts
});

function predictPad() {
  send(() => new Promise((resolve) => pad.toBlob(resolve, "image/png")), "drawing.png", true);
}

// One request at a time; while one is out, only the newest waiting one is kept.
// fromPad: the picture is the pad's, so boxes in its pixels can be drawn over it.
async function send(makeBody, name, fromPad) {
  if (inFlight) { queued = [makeBody, name, fromPad]; return; }
  inFlight = true;
  const mine = generation;
  try {
    const form = new FormData();
    form.append("file", await makeBody(), name);
    const response = await fetch(ENDPOINT[mode()], { method: "POST", body: form });
    const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (mine !== generation) return;
    if (response.ok) {
      show(answer, fromPad);
      setStatus("");
    } else {
      show(null);
      setStatus(answer.detail || `HTTP ${response.status}`, true);
    }
  } catch (err) {
    if (mine === generation) setStatus(`no answer from the server (${err.message})`, true);
  } finally {
    inFlight = false;
    if (queued) { const next = queued; queued = null; send(...next); }
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

function showDigit(answer) {
  digitEl.textContent = answer ? String(answer.digit) : "?";
  confidenceEl.textContent = answer ? `${(100 * answer.probability).toFixed(1)} % sure` : "";
  bars.querySelectorAll("li").forEach((li, d) => {
    const p = answer ? answer.probabilities[d] : 0;
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".pct").textContent = answer ? `${(100 * p).toFixed(1)} %` : "";
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
}

function percent(answerDigit) {
  return `${(100 * answerDigit.probability).toFixed(1)} %`;
}

function showNumber(answer, fromPad) {
  const digits = answer ? answer.digits : [];
  numberEl.textContent = answer ? answer.number : "?";
  digitsList.replaceChildren(...digits.map((d) => {
    const li = document.createElement("li");
    li.innerHTML = `<span class="label">${d.digit}</span><span class="pct">${percent(d)}</span>`;
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

// Which checkpoint answers, and how well it did on the MNIST test set when that is known.
async function describeModel() {
  try {
    const response = await fetch("/api/health");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const health = await response.json();
    const accuracy = typeof health.test_accuracy === "number"
      ? `${(100 * health.test_accuracy).toFixed(2)} % on the MNIST test set`
      : "test accuracy not known";
    modelLine.textContent = `model: ${health.name} \u00b7 ${accuracy}`;
  } catch (err) {
    modelLine.textContent = `model: unknown (no answer from /api/health: ${err.message})`;
  }
}

blank();
show(null);
describeModel();

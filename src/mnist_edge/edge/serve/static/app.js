// The drawing page: strokes on a canvas go to POST /predict as a PNG; the server preprocesses them
// with the same Python code as `mnist-edge predict` (nothing is prepared here) and sends back the
// answer with the 28x28 image the model saw.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const statusLine = document.getElementById("status");
const digitView = document.getElementById("digit");
const topList = document.getElementById("top");
const seen = document.getElementById("seen");
const preview = document.getElementById("preview");
const fileInput = document.getElementById("file");
const resultArea = document.querySelector(".result");

// A marker-thick pen: about MNIST's stroke once the digit is shrunk into its 20x20 box.
const PEN = pad.width / 14;
// The pause after the pen lifts before the model is asked: long enough for the second stroke of a 4 or a 7,
// short enough to feel like an answer to the drawing.
const PAUSE_MS = 700;
let drawing = null; // the pointer drawing now, and where it was
let inked = false;
let busy = false; // a request is on its way
let again = false; // the drawing changed while it was: send it once more when it returns
let pause = null; // the timer that asks once the pen has rested for PAUSE_MS
let version = 0; // changes to the pad so far (strokes, clears, a chosen file): only the latest's answer is shown
let shownVersion = 0; // the version of the pad the answer on screen is about
const DRAWING = "drawing.png"; // the name the drawing is sent under, which the server's answers repeat

function blank() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

function dot([x, y]) {
  ctx.beginPath();
  ctx.arc(x, y, PEN / 2, 0, 2 * Math.PI);
  ctx.fill();
}

function line(from, to) {
  ctx.beginPath();
  ctx.moveTo(...from);
  ctx.lineTo(...to);
  ctx.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || drawing) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  ctx.fillStyle = ctx.strokeStyle = "#000";
  ctx.lineWidth = PEN;
  ctx.lineCap = ctx.lineJoin = "round";
  drawing = { id: event.pointerId, at: point(event) };
  dot(drawing.at);
  inked = true;
  version += 1;
  clearTimeout(pause); // another stroke of the same digit, perhaps: wait for the pen to rest again
  resultArea.setAttribute("aria-busy", "true"); // the answer shown is not the answer to what is drawn now
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing || event.pointerId !== drawing.id) return;
  // Coalesced events keep fast strokes smooth where the browser batches them.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const next = point(e);
    line(drawing.at, next);
    drawing.at = next;
  }
});

function endStroke(event) {
  if (!drawing || event.pointerId !== drawing.id) return;
  drawing = null;
  clearTimeout(pause);
  pause = setTimeout(send, PAUSE_MS);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function send() {
  if (!inked) return;
  if (busy) {
    again = true;
    return;
  }
  working(true);
  const asked = version;
  pad.toBlob((png) => ask(png, "image/png", DRAWING, asked), "image/png");
}

// aria-busy: the answer shown is not yet the answer to what is drawn now.
function working(on) {
  busy = on;
  resultArea.setAttribute("aria-busy", String(on || drawing !== null || version !== shownVersion));
}

// BODY is a PNG blob (the drawing) or a FormData holding a chosen file; ASKED: the pad's version it answers.
async function ask(body, type, name, asked = version) {
  working(true);
  statusLine.textContent = "Reading\u2026";
  statusLine.classList.remove("error");
  try {
    const headers = type ? { "Content-Type": type } : {};
    const response = await fetch("/predict?preview=1&name=" + encodeURIComponent(name), { method: "POST", headers, body });
    const answer = await response.json();
    if (asked === version) {  // else the pad changed meanwhile: its own answer is coming, or nothing is to be shown
      shownVersion = asked;
      if (!response.ok) throw new Error(problem(response.status, answer.error, name));
      show(answer[0]);
    }
  } catch (error) {
    fail(error.message || String(error));
  } finally {
    working(false);
    if (again) {
      again = false;
      send();
    }
  }
}

// The server's error in words for this page: a drawing it cannot read was too small, not "an image".
function problem(status, error, name) {
  if (name !== DRAWING) return error || "the server answered " + status;
  if (status === 422) return "Draw a digit \u2013 that was too small to read.";
  return (error || "the server answered " + status).replace(DRAWING + ": ", "");
}

function show(row) {
  if (row.digit === null) {  // the model's "not a digit" answer
    digitView.textContent = "\u2013";
    topList.replaceChildren();
    statusLine.textContent = "That does not look like a digit.";
    preview.src = row.preview;
    seen.hidden = false;
    return;
  }
  digitView.textContent = row.digit;
  topList.replaceChildren(...row.top.map(({ digit, probability }) => {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = digit;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * probability).toFixed(1) + "%";
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(probability);
    item.append(label, bar, value);
    return item;
  }));
  const others = row.top.slice(1).map((t) => `${t.digit}: ${percent(t.probability)}`).join(", ");
  statusLine.textContent = `It is a ${row.digit} (${percent(row.probability)} sure).` + (others ? ` Next: ${others}.` : "");
  preview.src = row.preview;
  seen.hidden = false;
}

function fail(message) {
  statusLine.textContent = message;
  statusLine.classList.add("error");
  digitView.textContent = "?";
  topList.replaceChildren();
  seen.hidden = true;
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

document.getElementById("clear").addEventListener("click", () => {
  blank();
  clearTimeout(pause);
  again = false;
  shownVersion = version += 1; // an answer still on its way is about the drawing cleared
  working(busy);
  digitView.textContent = "?";
  topList.replaceChildren();
  seen.hidden = true;
  statusLine.classList.remove("error");
  statusLine.textContent = "Cleared. Draw a digit.";
});

fileInput.addEventListener("change", () => {
  const file = fileInput.files[0];
  if (!file) return;
  blank();
  clearTimeout(pause);
  version += 1;
  const form = new FormData();
  form.append("file", file, file.name);
  ask(form, null, file.name);
  fileInput.value = ""; // choosing the same file again still sends it
});

blank();

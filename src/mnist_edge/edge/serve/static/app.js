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
let drawing = null; // the pointer drawing now, and where it was
let inked = false;
let busy = false; // a request is on its way
let again = false; // the drawing changed while it was: send it once more when it returns

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
  send();
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
  pad.toBlob((png) => ask(png, "image/png", "drawing.png"), "image/png");
}

// aria-busy: the answer shown is not yet the answer to what is drawn now.
function working(on) {
  busy = on;
  resultArea.setAttribute("aria-busy", String(on));
}

// BODY is a PNG blob (the drawing) or a FormData holding a chosen file.
async function ask(body, type, name) {
  working(true);
  statusLine.textContent = "Reading\u2026";
  statusLine.classList.remove("error");
  try {
    const headers = type ? { "Content-Type": type } : {};
    const response = await fetch("/predict?preview=1&name=" + encodeURIComponent(name), { method: "POST", headers, body });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || "the server answered " + response.status);
    show(answer[0]);
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

function show(row) {
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
  again = false;
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
  const form = new FormData();
  form.append("file", file, file.name);
  ask(form, null, file.name);
  fileInput.value = ""; // choosing the same file again still sends it
});

blank();

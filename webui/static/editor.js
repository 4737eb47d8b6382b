// The editor's page side (webui/editor.py's Editor component, a Gradio HTML component).
// Gradio runs this file as the body of a function of: element (the component's root),
// trigger(event, data), props (value and the props the server set), server (its server
// functions), upload(file) -> {path, url} and watch(props, callback).
//
// Everything that needs no model happens here: showing, zooming and panning the photo,
// painting the mask, undo, the history of results. The photo is uploaded once per editing
// session; a repair uploads only the mask (a 1-bit PNG at the photo's resolution) and
// triggers "repair" with the paths of both; the answer arrives as the component's new value.
'use strict';

const BRUSH_FRACTION = 0.025; // default brush diameter: this share of the photo's long side
const BRUSH_STEP = 1.25; // [ and ] divide or multiply the size by this
const MASK_COLOUR = '#ff00ff';
const MASK_ALPHA = 0.5; // strokes show as translucent magenta: the object under them stays visible
const MAX_ZOOM = 32; // photo pixels this many screen pixels wide at most
const PING_EVERY_MS = 2000; // from the click until the result, /livez is asked this often...
const PING_TIMEOUT_MS = 3000; // ...each ask waits this long for its answer...
const SILENT_FOR_MS = 6000; // ...and a server that answered none for this long is reported: within 7 s
const RESERVED_HEIGHT_PX = 300; // what the page keeps above and below the canvas
const MIN_STAGE_PX = 220;
const HEIF_BRANDS = new Set(['heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'mif1', 'msf1']); // an iPhone's photos
const FILE_ROUTE = '/gradio_api/file='; // where Gradio serves uploaded and published files
const SERVER_FORMATS = new Set(['png', 'jpeg', 'webp', 'bmp']); // what both the browser and lama.imageio read
const NO_PHOTO = 'Upload a photo first: drop it on the editor, click it to browse, or paste one.';
const NO_PAINT = 'Paint over what should be removed first (the brush), then click Repair.';
const NOTHING_TO_RERUN = 'Nothing to rerun yet: repair once first.';
const NOT_ANSWERING = (problem) => `The server is not answering (${problem}): the repair did not finish; click Repair when it is back.`;

const root = element.querySelector('.lama-editor');
const ui = {
  bar: root.querySelector('.bar'),
  stage: root.querySelector('.stage'),
  canvas: root.querySelector('canvas.view'),
  drop: root.querySelector('.drop'),
  photoInput: root.querySelector('.photo-input'),
  size: root.querySelector('.brush-size'),
  threshold: root.querySelector('.mask-threshold'),
  autoRepair: root.querySelector('.auto-repair'),
  more: root.querySelector('.more'),
  repair: root.querySelector('[data-action="repair"]'),
  badge: root.querySelector('.badge'),
  help: root.querySelector('.help'),
  status: root.querySelector('.status'),
  statusText: root.querySelector('.status-text'),
  statusActions: root.querySelector('.status-actions'),
  result: root.querySelector('.result'),
  history: root.querySelector('.history'),
};
const view = ui.canvas.getContext('2d');
ui.threshold.value = props.mask_threshold ?? 127;

let session = null; // the photo being edited: see openSession
let removed = null; // the session last removed or replaced: Undo brings it back
let pending = null; // the repair in flight
let tool = 'brush';
let comparing = false;
let spaceHeld = false;
let fileBase = null; // Gradio's URL prefix for served files, learnt from the first upload
let frame = 0;
let requestCount = 0;
const camera = {scale: 1, x: 0, y: 0, fitted: true};
const pointers = new Map(); // active pointers on the canvas (touch: two of them pinch)
let gesture = null; // what the pointers are doing: {kind: 'paint'|'pan'|'pinch', ...}
let hover = null; // the pointer's position on the canvas (CSS px), for the brush outline

// ---------------------------------------------------------------- messages

function say(text, kind = 'info', actions = []) {
  ui.statusText.textContent = text;
  ui.status.dataset.kind = kind;
  ui.statusActions.replaceChildren(...actions.map(({label, run}) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = label;
    button.addEventListener('click', () => { say(''); run && run(); });
    return button;
  }));
}

function seconds(ms) {
  return (ms / 1000).toFixed(2);
}

function megapixels(pixels) {
  return `${(pixels / 1e6).toFixed(1).replace(/\.0$/, '')} MP`;
}

function stemOf(name) {
  return (name || 'photo').replace(/\.[^.]*$/, '') || 'photo';
}

// ---------------------------------------------------------------- files

async function sniff(file) {
  // The format by the first bytes, not by the name or the browser's guess of the type.
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const text = (start, end) => String.fromCharCode(...head.slice(start, end));
  if (head[0] === 0x89 && text(1, 4) === 'PNG') return 'png';
  if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'jpeg';
  if (text(0, 4) === 'RIFF' && text(8, 12) === 'WEBP') return 'webp';
  if (text(0, 2) === 'BM') return 'bmp';
  if (text(0, 4) === 'GIF8') return 'gif';
  if (text(0, 4) === 'II*\0' || text(0, 4) === 'MM\0*') return 'tiff';
  if (text(4, 8) === 'ftyp' && /^avi[fs]$/.test(text(8, 12))) return 'avif';
  if (text(4, 8) === 'ftyp' && HEIF_BRANDS.has(text(8, 12))) return 'heic'; // Safari opens it; Chromium cannot
  return null;
}

async function jpegOrientation(file) {
  // The EXIF orientation tag (1 = upright), to say when the photo was turned: the browser
  // (createImageBitmap) and the server (lama.imageio) both apply it.
  try {
    const data = new DataView(await file.slice(0, 131072).arrayBuffer());
    let offset = 2;
    while (offset + 10 <= data.byteLength) {
      const marker = data.getUint16(offset);
      if (marker === 0xffe1 && data.getUint32(offset + 4) === 0x45786966) { // APP1 "Exif"
        const tiff = offset + 10;
        const little = data.getUint16(tiff) === 0x4949;
        const directory = tiff + data.getUint32(tiff + 4, little);
        const entries = data.getUint16(directory, little);
        for (let i = 0; i < entries; i++) {
          const entry = directory + 2 + i * 12;
          if (data.getUint16(entry, little) === 0x0112) return data.getUint16(entry + 8, little);
        }
        return 1;
      }
      if ((marker & 0xff00) !== 0xff00 || marker === 0xffda) return 1;
      offset += 2 + data.getUint16(offset + 2);
    }
  } catch (error) {
    // A truncated header: the decoder will say whether the file is usable.
  }
  return 1;
}

function fileUrl(path) {
  // Each segment encoded as Gradio's own client encodes them: a photo's name may hold spaces, # or %.
  return fileBase + path.split('/').map(encodeURIComponent).join('/');
}

function urlOf(file) {
  // A file the server published ({path}), or one it sent inline ({url}) when it could not write it.
  return file.url !== undefined ? file.url : fileUrl(file.path);
}

function serverRoot() {
  // Where Gradio's routes are, as its upload answered; before any upload, the page's own address.
  if (!fileBase) return window.location.href.split(/[?#]/)[0].replace(/\/$/, '');
  return fileBase.slice(0, fileBase.indexOf(FILE_ROUTE));
}

async function send(file) {
  // Gradio's upload route; remembers the prefix under which Gradio serves files.
  const uploaded = await upload(file);
  // The prefix ends at the route, not where the path would start: the URL holds the path encoded.
  if (!fileBase) fileBase = uploaded.url.slice(0, uploaded.url.indexOf(FILE_ROUTE) + FILE_ROUTE.length);
  return uploaded;
}

function loadImage(url) {
  const image = new Image();
  image.decoding = 'async';
  image.src = url;
  return image.decode().then(() => image, () => { throw new Error(`could not load ${url.split('/').pop()}`); });
}

function newCanvas(width, height) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function saveBlob(blob, name) {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ---------------------------------------------------------------- opening a photo

function overLimits(width, height, bytes) {
  const problems = [];
  if (width * height > props.max_pixels) problems.push(`${megapixels(width * height)} (at most ${megapixels(props.max_pixels)})`);
  if (Math.max(width, height) > props.max_side) problems.push(`${Math.max(width, height)} px on its long side (at most ${props.max_side})`);
  if (bytes > props.max_bytes) problems.push(`${(bytes / 2 ** 20).toFixed(1)} MB (at most ${(props.max_bytes / 2 ** 20).toFixed(0)} MB)`);
  return problems;
}

async function openPhoto(file) {
  if (!file) return;
  const kind = file.size ? await sniff(file) : null;
  if (!kind) {
    say(`“${file.name}” is not an image: choose a PNG, JPEG, WebP, BMP, GIF or AVIF photo.`, 'error');
    return;
  }
  if (kind === 'tiff') {
    say(`“${file.name}” is a TIFF, which browsers cannot show: save it as PNG or JPEG (the HTTP API takes TIFF).`, 'error');
    return;
  }
  say(`Opening “${file.name}”…`);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {imageOrientation: 'from-image'});
  } catch (error) {
    say(kind === 'heic'
      ? `“${file.name}” is a HEIC photo, which this browser cannot open: save it as JPEG and open that.`
      : `“${file.name}” could not be read as an image (it may be truncated or corrupt).`, 'error');
    return;
  }
  const notes = [];
  const orientation = kind === 'jpeg' ? await jpegOrientation(file) : 1;
  if (orientation > 1) notes.push(`turned upright as the camera recorded it (EXIF orientation ${orientation})`);
  const problems = overLimits(bitmap.width, bitmap.height, file.size);
  if (problems.length) {
    const [width, height] = fitLimits(bitmap.width, bitmap.height);
    const copy = width < bitmap.width ? `a downscaled copy (${width}×${height})` : 'a re-encoded copy';
    say(`“${file.name}” is ${bitmap.width}×${bitmap.height}, ${problems.join(' and ')}: too large for this server.`, 'error', [
      {label: `Repair ${copy}`, run: () => openCopy(file, bitmap, width, height, notes)},
      {label: 'Cancel', run: () => bitmap.close()},
    ]);
    return;
  }
  if (!SERVER_FORMATS.has(kind)) {
    notes.push(`converted from ${kind.toUpperCase()} to PNG`);
    openSession(await encodeCopy(bitmap, bitmap.width, bitmap.height, file.name), bitmap, notes, file.name);
    return;
  }
  openSession(file, bitmap, notes);
}

function fitLimits(width, height) {
  const scale = Math.min(1, Math.sqrt(props.max_pixels / (width * height)), props.max_side / Math.max(width, height));
  return [Math.max(1, Math.floor(width * scale)), Math.max(1, Math.floor(height * scale))];
}

async function encodeCopy(bitmap, width, height, name) {
  // PNG; JPEG (quality 0.92) when the PNG would be over the upload limit.
  const canvas = newCanvas(width, height);
  const context = canvas.getContext('2d');
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, 0, 0, width, height);
  let blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  if (blob.size > props.max_bytes) {
    blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.92));
  }
  const extension = blob.type === 'image/png' ? 'png' : 'jpg';
  return new File([blob], `${stemOf(name)}.${extension}`, {type: blob.type});
}

async function openCopy(file, bitmap, width, height, notes) {
  const what = width < bitmap.width ? 'a downscaled copy' : 'a re-encoded copy';
  say(`Making ${what} of “${file.name}”…`);
  const copy = await encodeCopy(bitmap, width, height, file.name);
  bitmap.close();
  if (copy.size > props.max_bytes) {
    say(`Even ${what} (${width}×${height}) is over ${(props.max_bytes / 2 ** 20).toFixed(0)} MB; choose a smaller photo.`, 'error');
    return;
  }
  const scaled = await createImageBitmap(copy);
  openSession(copy, scaled, [...notes, `${what} of ${file.name} (the original was too large)`], file.name);
}

function openSession(file, bitmap, notes, name = file.name) {
  const replaced = session;
  if (replaced) removed = replaced;
  const {width, height} = bitmap;
  const mask = newCanvas(width, height);
  session = {
    name, width, height, file,
    original: bitmap,
    display: bitmap, // history[index] as shown: the original with the patches of its repairs
    history: [{parent: -1, image: null}],
    index: 0,
    forward: [], // results stepped back from (Redo goes there again)
    mask, maskContext: mask.getContext('2d'),
    ops: [], redo: [],
    brush: Math.max(2, Math.round(BRUSH_FRACTION * Math.max(width, height))),
    lastMask: null,
    upload: null,
  };
  startUpload(session);
  ui.size.value = session.brush;
  root.dataset.photo = 'loaded';
  camera.fitted = true;
  layout();
  renderHistory();
  showResult(null);
  const summary = `${name}: ${width}×${height}${notes.length ? `, ${notes.join(', ')}` : ''}. Paint over what should go, then Repair.`;
  say(summary, 'info', replaced ? [{label: 'Undo (back to the previous photo)', run: restoreRemoved}] : []);
}

function startUpload(target) {
  // Uploaded in the background while the user paints; a repair waits for it.
  target.upload = send(target.file).then(async (uploaded) => {
    const answer = await server.prepare({path: uploaded.path}).catch(() => ({}));
    if (answer && answer.error) {
      if (session === target) say(answer.error, 'error');
      throw new Error(answer.error);
    }
    return uploaded;
  });
  target.upload.catch((error) => {
    if (session === target && ui.status.dataset.kind !== 'error') {
      say(`The photo could not be uploaded (${error.message || error}); Repair will try again.`, 'error');
    }
  });
}

function removePhoto() {
  if (!session) return;
  removed = session;
  session = null;
  root.dataset.photo = 'none';
  showResult(null);
  renderHistory();
  layout();
  say('Photo removed.', 'info', [{label: 'Undo', run: restoreRemoved}]);
}

function restoreRemoved() {
  if (!removed) return;
  const current = session;
  session = removed;
  removed = current;
  root.dataset.photo = 'loaded';
  ui.size.value = session.brush;
  camera.fitted = true;
  layout();
  renderHistory();
  showEntry();
  say(`${session.name} is back.`);
}

// ---------------------------------------------------------------- the mask

function strokeBounds(op) {
  let [left, top] = op.points;
  let right = left;
  let bottom = top;
  for (let i = 2; i < op.points.length; i += 2) {
    left = Math.min(left, op.points[i]);
    right = Math.max(right, op.points[i]);
    top = Math.min(top, op.points[i + 1]);
    bottom = Math.max(bottom, op.points[i + 1]);
  }
  const r = op.size / 2 + 2;
  return [left - r, top - r, right + r, bottom + r];
}

function paintedBounds(target) {
  // Where the mask can be nonzero, from the operations (so that a small stroke on a large
  // photo is exported without reading every pixel). null: nothing can be painted.
  let box = null;
  const full = [0, 0, target.width, target.height];
  for (const op of target.ops) {
    if (op.kind === 'clear') box = null;
    else if (op.kind === 'stroke' && op.erase) continue;
    else if (op.kind === 'stroke') {
      const b = strokeBounds(op);
      box = box ? [Math.min(box[0], b[0]), Math.min(box[1], b[1]), Math.max(box[2], b[2]), Math.max(box[3], b[3])] : b;
    } else box = full;
  }
  if (!box) return null;
  const left = Math.max(0, Math.floor(box[0]));
  const top = Math.max(0, Math.floor(box[1]));
  const right = Math.min(target.width, Math.ceil(box[2]));
  const bottom = Math.min(target.height, Math.ceil(box[3]));
  return right > left && bottom > top ? [left, top, right - left, bottom - top] : null;
}

function drawStroke(context, op, from = 0) {
  context.save();
  context.globalCompositeOperation = op.erase ? 'destination-out' : 'source-over';
  context.strokeStyle = context.fillStyle = MASK_COLOUR;
  context.lineWidth = op.size;
  context.lineCap = 'round';
  context.lineJoin = 'round';
  const points = op.points;
  if (points.length === 2) {
    context.beginPath();
    context.arc(points[0], points[1], op.size / 2, 0, 2 * Math.PI);
    context.fill();
  } else {
    const start = Math.max(0, from - 2);
    context.beginPath();
    context.moveTo(points[start], points[start + 1]);
    for (let i = start + 2; i < points.length; i += 2) context.lineTo(points[i], points[i + 1]);
    context.stroke();
  }
  context.restore();
}

function invertMask(target) {
  const inverted = newCanvas(target.width, target.height);
  const context = inverted.getContext('2d');
  context.fillStyle = MASK_COLOUR;
  context.fillRect(0, 0, target.width, target.height);
  context.globalCompositeOperation = 'destination-out';
  context.drawImage(target.mask, 0, 0);
  target.maskContext.clearRect(0, 0, target.width, target.height);
  target.maskContext.drawImage(inverted, 0, 0);
}

function applyOp(target, op) {
  const context = target.maskContext;
  if (op.kind === 'stroke') drawStroke(context, op);
  else if (op.kind === 'clear') context.clearRect(0, 0, target.width, target.height);
  else if (op.kind === 'invert') invertMask(target);
  else if (op.kind === 'image') {
    context.clearRect(0, 0, target.width, target.height);
    context.drawImage(op.canvas, 0, 0);
  }
}

function replayMask(target = session) {
  target.maskContext.clearRect(0, 0, target.width, target.height);
  for (const op of target.ops) applyOp(target, op);
  render();
}

function pushOp(op) {
  session.ops.push(op);
  session.redo = [];
  applyOp(session, op);
  render();
}

function crc32Table() {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
}
const CRC_TABLE = crc32Table();

function pngChunk(type, data) {
  const chunk = new Uint8Array(12 + data.length);
  const view32 = new DataView(chunk.buffer);
  view32.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(data, 8);
  let crc = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) crc = CRC_TABLE[(crc ^ chunk[i]) & 0xff] ^ (crc >>> 8);
  view32.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return chunk;
}

async function maskPng(target) {
  // The mask as a 1-bit black-and-white PNG at the photo's resolution, or null when nothing
  // is painted. 1 bit a pixel and the browser's own zlib (CompressionStream): at 12 MP this
  // takes a fraction of canvas.toBlob's time and a few KB instead of hundreds. Only the
  // painted rectangle is read; the pixels are read before the first await, so the mask
  // sent is the one on screen at the click.
  const box = paintedBounds(target);
  if (!box) return null;
  const [left, top, width, height] = box;
  const pixels = target.maskContext.getImageData(left, top, width, height).data;
  const stride = ((target.width + 7) >> 3) + 1; // + the filter byte (0: none) of each row
  const rows = new Uint8Array(stride * target.height);
  let painted = false;
  for (let y = 0; y < height; y++) {
    const row = (top + y) * stride + 1;
    let i = y * width * 4 + 3;
    for (let x = left; x < left + width; x++, i += 4) {
      if (pixels[i] > 127) {
        rows[row + (x >> 3)] |= 0x80 >> (x & 7);
        painted = true;
      }
    }
  }
  if (!painted) return null;
  const header = new Uint8Array(13);
  const headerView = new DataView(header.buffer);
  headerView.setUint32(0, target.width);
  headerView.setUint32(4, target.height);
  header.set([1, 0, 0, 0, 0], 8); // bit depth 1, grey, deflate, no filter, no interlace
  const compressed = await new Response(new Blob([rows]).stream().pipeThrough(new CompressionStream('deflate'))).arrayBuffer();
  return new Blob([
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header), pngChunk('IDAT', new Uint8Array(compressed)), pngChunk('IEND', new Uint8Array(0)),
  ], {type: 'image/png'});
}

async function openMask(file) {
  if (!session) return say(NO_PHOTO, 'error');
  const kind = file.size ? await sniff(file) : null;
  let bitmap = null;
  if (kind && kind !== 'tiff') bitmap = await createImageBitmap(file).catch(() => null);
  if (!bitmap) return say(`“${file.name}” is not a mask the browser can read: use a PNG or JPEG.`, 'error');
  const {width, height} = session;
  const canvas = newCanvas(width, height);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, 0, 0, width, height);
  const image = context.getImageData(0, 0, width, height);
  const data = image.data;
  // As the server reads mask files: the alpha is the mask when anything is transparent,
  // else the brightest channel (white, or any colour, on black).
  let transparent = false;
  for (let i = 3; i < data.length; i += 4) if (data[i] < 255) { transparent = true; break; }
  const threshold = Math.min(254, Math.max(0, Math.round(Number(ui.threshold.value) || 0)));
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    const value = transparent ? data[i + 3] : Math.max(data[i], data[i + 1], data[i + 2]);
    if (value > threshold) {
      data[i] = 255; data[i + 1] = 0; data[i + 2] = 255; data[i + 3] = 255;
      count++;
    } else {
      data[i + 3] = 0;
    }
  }
  context.putImageData(image, 0, 0);
  pushOp({kind: 'image', canvas});
  const resized = bitmap.width !== width || bitmap.height !== height ? `, resized from ${bitmap.width}×${bitmap.height}` : '';
  bitmap.close();
  say(`Mask “${file.name}” loaded${resized}, threshold ${threshold}: ${(100 * count / (width * height)).toFixed(1)} % of the photo will be repaired.`);
}

function chooseFile(accept, onFile) {
  // A detached input: the editor holds exactly one file input, the photo's.
  const input = document.createElement('input');
  input.type = 'file';
  input.accept = accept;
  input.addEventListener('change', () => input.files[0] && onFile(input.files[0]));
  input.click();
}

// ---------------------------------------------------------------- the view

function layout() {
  // The canvas takes the component's width and as much of the window's height as leaves
  // the tools, the Repair button and the message line on screen, no more than the photo needs.
  const width = ui.stage.clientWidth;
  const room = Math.max(MIN_STAGE_PX, window.innerHeight - RESERVED_HEIGHT_PX);
  const needed = session ? width * session.height / session.width : 360;
  const height = Math.round(Math.max(MIN_STAGE_PX, Math.min(room, needed)));
  ui.stage.style.height = `${height}px`;
  const ratio = window.devicePixelRatio || 1;
  ui.canvas.width = Math.round(width * ratio);
  ui.canvas.height = Math.round(height * ratio);
  if (camera.fitted) fit();
  render();
}

function fit() {
  camera.fitted = true;
  if (!session) return;
  const width = ui.canvas.clientWidth;
  const height = ui.canvas.clientHeight;
  camera.scale = Math.min(width / session.width, height / session.height);
  camera.x = (width - session.width * camera.scale) / 2;
  camera.y = (height - session.height * camera.scale) / 2;
  render();
}

function zoomAt(x, y, factor) {
  if (!session) return;
  const smallest = Math.min(ui.canvas.clientWidth / session.width, ui.canvas.clientHeight / session.height) / 2;
  const scale = Math.min(MAX_ZOOM, Math.max(smallest, camera.scale * factor));
  camera.x = x - (x - camera.x) * scale / camera.scale;
  camera.y = y - (y - camera.y) * scale / camera.scale;
  camera.scale = scale;
  camera.fitted = false;
  render();
}

function toPhoto(x, y) {
  return [(x - camera.x) / camera.scale, (y - camera.y) / camera.scale];
}

function render() {
  if (!frame) frame = requestAnimationFrame(draw);
}

function draw() {
  frame = 0;
  const ratio = window.devicePixelRatio || 1;
  view.setTransform(1, 0, 0, 1, 0, 0);
  view.clearRect(0, 0, ui.canvas.width, ui.canvas.height);
  if (!session) return;
  // The badge says what the canvas shows when it is not simply the photo fitted in.
  ui.badge.hidden = !comparing && camera.fitted;
  ui.badge.textContent = comparing ? 'Original' : `Zoom ${Math.round(camera.scale * 100)} %`;
  view.setTransform(ratio * camera.scale, 0, 0, ratio * camera.scale, ratio * camera.x, ratio * camera.y);
  view.imageSmoothingEnabled = camera.scale < 4; // zoomed in far, the photo's pixels show as squares
  view.drawImage(comparing ? session.original : session.display, 0, 0);
  if (!comparing) {
    view.globalAlpha = MASK_ALPHA;
    view.drawImage(session.mask, 0, 0);
    view.globalAlpha = 1;
  }
  if (hover && !gesture && !spaceHeld && !comparing) {
    view.setTransform(ratio, 0, 0, ratio, 0, 0);
    const radius = Math.max(1, session.brush * camera.scale / 2);
    view.beginPath();
    view.arc(hover[0], hover[1], radius, 0, 2 * Math.PI);
    view.lineWidth = 1.5;
    view.strokeStyle = 'rgba(0, 0, 0, 0.8)';
    view.stroke();
    view.beginPath();
    view.arc(hover[0], hover[1], radius + 1.5, 0, 2 * Math.PI);
    view.strokeStyle = 'rgba(255, 255, 255, 0.9)';
    view.stroke();
  }
}

function canvasPoint(event) {
  const box = ui.canvas.getBoundingClientRect();
  return [event.clientX - box.left, event.clientY - box.top];
}

function onPointerDown(event) {
  if (!session) return;
  ui.canvas.setPointerCapture(event.pointerId);
  pointers.set(event.pointerId, canvasPoint(event));
  if (pointers.size === 2) {
    // A second finger: the stroke the first one began was the start of a pinch.
    if (gesture && gesture.kind === 'paint') undoPaintGesture();
    const [a, b] = [...pointers.values()];
    gesture = {kind: 'pinch', distance: Math.hypot(a[0] - b[0], a[1] - b[1]), centre: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]};
    return;
  }
  if (pointers.size > 2) return;
  const [x, y] = pointers.get(event.pointerId);
  if (spaceHeld || event.button === 1 || event.button === 2) {
    gesture = {kind: 'pan', last: [x, y]};
    ui.stage.classList.add('panning');
    event.preventDefault();
    return;
  }
  if (event.button !== 0) return;
  const [px, py] = toPhoto(x, y);
  const op = {kind: 'stroke', erase: tool === 'eraser', size: session.brush, points: [px, py]};
  gesture = {kind: 'paint', op, target: session};
  pushOp(op);
}

function onPointerMove(event) {
  const point = canvasPoint(event);
  hover = event.pointerType === 'mouse' ? point : null;
  if (!pointers.has(event.pointerId)) return render();
  pointers.set(event.pointerId, point);
  if (!gesture) return;
  if (gesture.kind === 'paint' && gesture.target === session) {
    const op = gesture.op;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    const from = op.points.length;
    for (const each of events.length ? events : [event]) op.points.push(...toPhoto(...canvasPoint(each)));
    drawStroke(session.maskContext, op, from);
  } else if (gesture.kind === 'pan') {
    camera.x += point[0] - gesture.last[0];
    camera.y += point[1] - gesture.last[1];
    camera.fitted = false;
    gesture.last = point;
  } else if (gesture.kind === 'pinch' && pointers.size === 2) {
    const [a, b] = [...pointers.values()];
    const distance = Math.hypot(a[0] - b[0], a[1] - b[1]);
    const centre = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    camera.x += centre[0] - gesture.centre[0];
    camera.y += centre[1] - gesture.centre[1];
    zoomAt(centre[0], centre[1], distance / gesture.distance);
    gesture.distance = distance;
    gesture.centre = centre;
  }
  render();
}

function onPointerUp(event) {
  if (!pointers.delete(event.pointerId)) return;
  if (pointers.size > 0 && gesture && gesture.kind === 'pinch') return;
  const ended = gesture;
  gesture = null;
  ui.stage.classList.remove('panning');
  render();
  if (ended && ended.kind === 'paint' && ended.target === session && ui.autoRepair.checked && !ended.op.erase) {
    if (pending) session.repairWhenDone = true;
    else repair();
  }
}

function undoPaintGesture() {
  const index = gesture.target.ops.indexOf(gesture.op);
  if (index >= 0) gesture.target.ops.splice(index, 1);
  replayMask(gesture.target);
  gesture = null;
}

function onWheel(event) {
  if (!session) return;
  event.preventDefault();
  const [x, y] = canvasPoint(event);
  // A trackpad pinch arrives as a wheel event with ctrlKey set, in smaller steps.
  zoomAt(x, y, Math.exp(-event.deltaY * (event.ctrlKey ? 0.01 : 0.0015)));
}

// ---------------------------------------------------------------- tools and history

function setTool(name) {
  tool = name;
  for (const button of ui.bar.querySelectorAll('[data-action="brush"], [data-action="eraser"]')) {
    button.setAttribute('aria-pressed', String(button.dataset.action === name));
  }
}

function setBrush(size) {
  if (!session) return;
  const limit = Math.max(session.width, session.height);
  session.brush = Math.max(1, Math.min(limit, Math.round(size)));
  ui.size.value = session.brush;
  render();
}

function undo() {
  if (!session) return restoreRemoved();
  if (session.ops.length) {
    session.redo.push(session.ops.pop());
    replayMask();
  } else if (session.index > 0) {
    session.forward.push(session.index);
    selectEntry(session.history[session.index].parent, false);
  }
}

function redo() {
  if (!session) return;
  if (session.redo.length) {
    const op = session.redo.pop();
    session.ops.push(op);
    applyOp(session, op);
    render();
  } else if (session.forward.length) {
    selectEntry(session.forward.pop(), false);
  }
}

function clearStrokes() {
  if (!session || !session.ops.length) return;
  pushOp({kind: 'clear'});
  say('Strokes cleared (Undo brings them back).', 'info', [{label: 'Undo', run: undo}]);
}

function compose(target, index) {
  // history[index] as a picture: the original with the repaired rectangles of the chain of
  // results that led to it drawn over it.
  if (index === 0) return target.original;
  const chain = [];
  for (let i = index; i > 0; i = target.history[i].parent) chain.unshift(target.history[i]);
  const canvas = newCanvas(target.width, target.height);
  const context = canvas.getContext('2d');
  context.drawImage(target.original, 0, 0);
  for (const entry of chain) drawPatch(context, entry);
  return canvas;
}

function drawPatch(context, entry) {
  if (!entry.patch) return;
  const [x, y, width, height] = entry.box;
  context.clearRect(x, y, width, height);
  context.drawImage(entry.patch, x, y, width, height);
}

function selectEntry(index, clearForward = true) {
  if (!session || index < 0 || index >= session.history.length) return;
  if (clearForward) session.forward = [];
  const target = session;
  const display = compose(target, index);
  target.index = index;
  target.display = display;
  render();
  renderHistory();
  showEntry();
}

function showEntry() {
  const entry = session && session.history[session.index];
  showResult(entry && entry.image ? entry : null);
  render();
}

function showResult(entry) {
  // #result shows the current result's preview (one <img>), its download and timings.
  if (!entry) {
    ui.result.replaceChildren();
    delete ui.result.dataset.waitedMs;
    return;
  }
  const figure = document.createElement('figure');
  const image = document.createElement('img');
  image.alt = 'The repaired photo (preview; the download is full size)';
  image.src = entry.preview;
  const caption = document.createElement('figcaption');
  let link = document.createElement('a');
  if (entry.download) {
    link.href = entry.download;
    link.download = entry.name;
    link.textContent = `Download ${entry.name}`;
  } else {
    link = document.createElement('span');
    link.textContent = 'Too large to send without a file: free space on the server and repair again to download it.';
  }
  const summary = document.createElement('span');
  summary.className = 'summary';
  summary.textContent = entry.unsaved ? `${entry.summary} · not stored on the server (its disk is full): download it now`
    : entry.summary;
  const waited = document.createElement('span');
  waited.className = 'waited';
  waited.textContent = entry.waited || '';
  caption.append(link, summary, waited);
  figure.append(image, caption);
  ui.result.replaceChildren(figure);
  // The shown result's own wait, or none yet (a result just drawn, whose wait is measured next).
  if (entry.waitedMs) ui.result.dataset.waitedMs = String(Math.round(entry.waitedMs));
  else delete ui.result.dataset.waitedMs;
}

function renderHistory() {
  const entries = session ? session.history : [];
  if (entries.length < 2) return ui.history.replaceChildren();
  ui.history.replaceChildren(...entries.map((entry, index) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.title = index ? `Result ${index}` : 'The original';
    button.setAttribute('aria-current', String(index === session.index));
    const image = document.createElement('img');
    image.alt = button.title;
    image.src = entry.preview || entry.thumbnail || '';
    button.append(image);
    button.addEventListener('click', () => selectEntry(index));
    return button;
  }));
}

function thumbnail(bitmap) {
  const height = 56;
  const canvas = newCanvas(Math.max(1, Math.round(bitmap.width * height / bitmap.height)), height);
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL('image/jpeg', 0.8);
}

// ---------------------------------------------------------------- repairing

function setBusy(busy) {
  ui.repair.disabled = busy;
  ui.repair.textContent = busy ? 'Repairing…' : 'Repair';
}

async function imagePath(target, index) {
  const entry = target.history[index];
  if (entry.image) return {path: entry.image.path}; // (without the inline copy of a result the server could not write)
  if (!target.upload) startUpload(target);
  try {
    return {path: (await target.upload).path};
  } catch (error) {
    startUpload(target); // a failed upload is retried once, now
    return {path: (await target.upload).path};
  }
}

async function repair({rerun = false, retry = null} = {}) {
  // rerun: with the last repair's mask; retry: the same job again (its mask is on the server).
  if (pending) return; // one repair at a time: a double click runs one job
  if (!session) return say(NO_PHOTO, 'error');
  const target = session;
  const started = retry ? retry.started : performance.now();
  const id = `r${++requestCount}-${Math.random().toString(36).slice(2, 8)}`;
  const sent = retry ? retry.sent : rerun ? [] : target.ops.slice();
  const job = {id, started, target, from: retry ? retry.from : target.index, sent, retried: !!retry};
  pending = job;
  setBusy(true);
  watchServer(job); // the uploads too: a server that stops answering during them is reported
  try {
    let mask;
    if (retry) {
      mask = retry.mask;
    } else if (rerun) {
      if (!target.lastMask) throw new Error(NOTHING_TO_RERUN);
      mask = target.lastMask;
    } else {
      const png = await maskPng(target);
      if (!png) throw new Error(NO_PAINT);
      mask = {path: (await send(new File([png], 'mask.png', {type: 'image/png'}))).path};
    }
    const photo = await imagePath(target, job.from); // normally uploaded long before
    if (pending !== job) return; // given up meanwhile: the server stopped answering
    job.mask = mask;
    job.uploaded = performance.now();
    trigger('repair', {request: id, photo, mask, name: target.name});
  } catch (error) {
    if (pending !== job) return;
    finish();
    // An upload that failed because the server is gone says so, not "Failed to fetch".
    const problem = [NO_PAINT, NOTHING_TO_RERUN].includes(error.message) ? null : await serverProblem();
    say(problem ? `${NOT_ANSWERING(problem)} Your photo, strokes and results are kept.` : error.message || String(error),
      'error');
  }
}

function finish() {
  const done = pending;
  if (done && done.timer) clearInterval(done.timer);
  if (done && done.toasts) done.toasts.disconnect();
  pending = null;
  setBusy(false);
  if (done && done.target === session && session.repairWhenDone) {
    session.repairWhenDone = false;
    if (session.ops.length) repair();
  }
}

const NO_ANSWER = `no answer within ${PING_TIMEOUT_MS / 1000} s`;

async function serverProblem() {
  // Why the server cannot answer, or null when /livez says it is there: it answers in
  // milliseconds, whatever the server is busy with.
  try {
    const response = await fetch(`${serverRoot()}/livez`, {cache: 'no-store', signal: AbortSignal.timeout(PING_TIMEOUT_MS)});
    return response.ok ? null : `it answers ${response.status}`;
  } catch (error) {
    return error.name === 'TimeoutError' ? NO_ANSWER : 'it cannot be reached';
  }
}

function giveUp(job, message) {
  if (pending !== job) return;
  finish();
  say(`${message} Your photo, strokes and results are kept.`, 'error');
}

function watchServer(job) {
  // Gradio never reports a server that went away: /livez is asked while the repair runs. A
  // refused connection or an error status ends the wait at once; one slow answer does not (a
  // machine under load may take seconds to answer): only SILENT_FOR_MS without any.
  job.heard = performance.now();
  job.timer = setInterval(async () => {
    const problem = await serverProblem();
    if (!problem) job.heard = performance.now();
    else if (problem !== NO_ANSWER) giveUp(job, NOT_ANSWERING(problem));
    else if (performance.now() - job.heard >= SILENT_FOR_MS) giveUp(job, NOT_ANSWERING(`no answer for ${SILENT_FOR_MS / 1000} s`));
  }, PING_EVERY_MS);
  // What Gradio refuses before the handler runs (its queue full, a file it does not accept)
  // and a broken connection show only as its error toast: that ends the wait too.
  const seen = new Set(document.querySelectorAll('[data-testid="toast-body"]'));
  job.toasts = new MutationObserver(async () => {
    for (const toast of document.querySelectorAll('[data-testid="toast-body"].error')) {
      if (seen.has(toast)) continue;
      seen.add(toast);
      const text = toast.querySelector('[data-testid="toast-text"]')?.textContent.trim() || 'an error';
      const problem = await serverProblem();
      giveUp(job, problem ? NOT_ANSWERING(problem) : `The server refused the repair: ${text}.`);
    }
  });
  job.toasts.observe(document.body, {childList: true, subtree: true});
}

watch('value', () => {
  const answer = props.value;
  if (answer && pending && answer.request === pending.id) receive(pending, answer);
});

async function receive(job, answer) {
  const target = job.target;
  if (answer.error) {
    if (answer.code === 'photo_gone' && job.from === 0 && !job.retried) {
      // Uploads expire on the server; the browser still has the photo: upload it again.
      finish();
      startUpload(target);
      say(`${answer.error} Uploading it again…`);
      if (target === session) repair({retry: job});
      return;
    }
    if (answer.code === 'photo_gone') {
      finish();
      say('This result is no longer on the server (results expire after a while): step back to the original ' +
        '(Undo, or its thumbnail) and repair again.', 'error');
      return;
    }
    finish();
    say(answer.error, 'error'); // the last result stays on screen
    return;
  }
  const result = answer.result;
  try {
    const [preview, patch] = await Promise.all([
      loadImage(urlOf(result.preview)),
      result.patch ? loadImage(urlOf(result.patch)) : null,
    ]);
    if (!target.history[0].thumbnail) target.history[0].thumbnail = thumbnail(target.original);
    const entry = {
      parent: job.from, image: result.image, name: result.name, summary: result.summary,
      preview: preview.src, download: urlOf(result.image), unsaved: !!result.unsaved,
      patch, box: result.patch ? result.patch.box : null,
    };
    target.history.push(entry);
    target.forward = [];
    target.lastMask = job.mask;
    // The strokes sent are used up; those painted while the repair ran stay.
    target.ops = target.ops.filter((op) => !job.sent.includes(op));
    target.redo = [];
    replayMask(target);
    target.display = displayWith(target, job.from, entry);
    target.index = target.history.length - 1;
    if (target === session) {
      renderHistory();
      showEntry();
      await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const waited = performance.now() - job.started;
      const t = result.timings;
      const upload = job.uploaded - job.started;
      const transfer = Math.max(0, waited - upload - t.server * 1000);
      entry.waitedMs = waited;
      entry.waited = `Waited ${seconds(waited)} s: upload ${seconds(upload)} · queue ${t.queue.toFixed(2)} · ` +
        `model ${t.model.toFixed(2)} · save ${t.save.toFixed(2)} · transfer ${seconds(transfer)}`;
      showResult(entry);
      // The server records this repair with the user's wait too (its Resources tab, requests.jsonl).
      if (answer.wait_token) {
        server.report_wait({token: answer.wait_token, waited_ms: waited, upload_ms: upload, transfer_ms: transfer})
          .catch(() => {}); // a record without the wait is all that is lost
      }
      say('Repaired. Paint more and Repair again, or step back with Undo.');
    }
  } catch (error) {
    say(`The repair finished but its result could not be shown (${error.message}); try again.`, 'error');
  }
  if (pending === job) finish();
}

function displayWith(target, from, entry) {
  // history[from] with the new result's rectangle drawn over it: in place when the canvas
  // on screen already shows history[from] (the usual case: repair, repair again).
  let canvas = target.index === from && target.display !== target.original ? target.display : compose(target, from);
  if (canvas === target.original) {
    canvas = newCanvas(target.width, target.height);
    canvas.getContext('2d').drawImage(target.original, 0, 0);
  }
  drawPatch(canvas.getContext('2d'), entry);
  return canvas;
}

async function useMaskForBatch() {
  // The Batch tab takes this mask for all its photos (resized to each): uploaded, then named in
  // the "batch_mask" event, whose listener fills the tab's masks and opens it.
  if (!session) return say(NO_PHOTO, 'error');
  const png = await maskPng(session);
  if (!png) return say('The mask is empty: paint over what should go on every photo first.', 'error');
  try {
    const uploaded = await send(new File([png], `${stemOf(session.name)}-mask.png`, {type: 'image/png'}));
    trigger('batch_mask', {mask: {path: uploaded.path}});
    say('The Batch tab repairs its photos with this mask.');
  } catch (error) {
    say(`The mask could not be uploaded (${error.message || error}); try again.`, 'error');
  }
}

// ---------------------------------------------------------------- wiring

const actions = {
  brush: () => setTool('brush'),
  eraser: () => setTool('eraser'),
  undo, redo,
  repair: () => repair(),
  rerun: () => repair({rerun: true}),
  clear: clearStrokes,
  invert: () => session ? (pushOp({kind: 'invert'}), say('Mask inverted (Undo brings it back).')) : say(NO_PHOTO, 'error'),
  'upload-mask': () => session ? chooseFile('image/png,image/jpeg,image/webp,image/bmp', openMask) : say(NO_PHOTO, 'error'),
  'download-mask': async () => {
    if (!session) return say(NO_PHOTO, 'error');
    const png = await maskPng(session);
    if (!png) return say('The mask is empty: nothing to download.', 'error');
    saveBlob(png, `${stemOf(session.name)}-mask.png`);
  },
  'batch-mask': useMaskForBatch,
  open: () => ui.photoInput.click(),
  remove: removePhoto,
  help: () => { ui.help.hidden = !ui.help.hidden; },
  compare: () => {},
};

ui.bar.addEventListener('click', (event) => {
  const button = event.target.closest('[data-action]');
  if (!button || button.disabled) return;
  if (button.closest('.menu')) ui.more.open = false;
  actions[button.dataset.action]();
});
const compareButton = root.querySelector('[data-action="compare"]');
const setComparing = (on) => { comparing = on && !!session; render(); };
compareButton.addEventListener('pointerdown', () => setComparing(true));
for (const type of ['pointerup', 'pointerleave', 'pointercancel']) compareButton.addEventListener(type, () => setComparing(false));

ui.size.addEventListener('change', () => setBrush(Number(ui.size.value) || 1));
ui.photoInput.addEventListener('change', () => {
  const file = ui.photoInput.files[0];
  ui.photoInput.value = ''; // the same file chosen again is a change too
  openPhoto(file);
});
ui.drop.addEventListener('dragover', (event) => { event.preventDefault(); ui.drop.classList.add('over'); });
ui.drop.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
ui.stage.addEventListener('dragover', (event) => event.preventDefault());
ui.stage.addEventListener('drop', (event) => {
  event.preventDefault();
  ui.drop.classList.remove('over');
  openPhoto(event.dataTransfer.files[0]);
});
ui.canvas.addEventListener('pointerdown', onPointerDown);
ui.canvas.addEventListener('pointermove', onPointerMove);
ui.canvas.addEventListener('pointerup', onPointerUp);
ui.canvas.addEventListener('pointercancel', onPointerUp);
ui.canvas.addEventListener('pointerleave', () => { hover = null; render(); });
ui.canvas.addEventListener('wheel', onWheel, {passive: false});
ui.canvas.addEventListener('contextmenu', (event) => event.preventDefault());
new ResizeObserver(() => layout()).observe(ui.stage);

function editorOnScreen() {
  return element.isConnected && element.offsetParent !== null;
}

function typingElsewhere(event) {
  const target = event.target;
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

const keyListeners = {
  keydown(event) {
    if (!editorOnScreen() || typingElsewhere(event)) return;
    const command = event.ctrlKey || event.metaKey;
    const key = event.key;
    if (command && (key === 'z' || key === 'Z')) {
      event.shiftKey ? redo() : undo();
    } else if (command && key === 'y') {
      redo();
    } else if (command || event.altKey) {
      return;
    } else if (key === '[') {
      setBrush(session ? session.brush / BRUSH_STEP : 1);
    } else if (key === ']') {
      setBrush(session ? session.brush * BRUSH_STEP : 1);
    } else if (key === 'b' || key === 'B') {
      setTool('brush');
    } else if (key === 'e' || key === 'E') {
      setTool('eraser');
    } else if (key === 'c' || key === 'C') {
      if (!event.repeat) setComparing(true);
    } else if (key === ' ') {
      if (!session) return;
      spaceHeld = true;
      ui.stage.classList.add('space');
      render();
    } else if (key === 'Escape') {
      ui.help.hidden = true;
      ui.more.open = false;
      fit();
    } else if (key === '?') {
      ui.help.hidden = !ui.help.hidden;
    } else if (key === 'Enter' && !event.target.closest?.('button, summary, a')) {
      repair(); // (a focused button takes Enter itself)
    } else {
      return;
    }
    event.preventDefault();
  },
  keyup(event) {
    if (event.key === ' ' && spaceHeld) {
      event.preventDefault(); // a focused button would take the space as a click
      spaceHeld = false;
      ui.stage.classList.remove('space');
      render();
    } else if (event.key === 'c' || event.key === 'C') {
      setComparing(false);
    }
  },
  paste(event) {
    if (!editorOnScreen() || typingElsewhere(event)) return;
    const file = [...(event.clipboardData ? event.clipboardData.files : [])][0];
    if (file) {
      event.preventDefault();
      openPhoto(file);
    }
  },
  pointerdown(event) {
    if (ui.more.open && !ui.more.contains(event.target)) ui.more.open = false; // a menu closes on a click elsewhere
  },
  blur() {
    spaceHeld = false;
    setComparing(false);
  },
  resize() {
    if (element.isConnected) layout();
  },
};
for (const [type, listener] of Object.entries(keyListeners)) window.addEventListener(type, listener);
// When Gradio removes the component, its window listeners go too.
new MutationObserver((_, observer) => {
  if (element.isConnected) return;
  for (const [type, listener] of Object.entries(keyListeners)) window.removeEventListener(type, listener);
  observer.disconnect();
}).observe(document.body, {childList: true, subtree: true});

setTool('brush');
layout();

// Runs an ONNX model on ONNX Runtime (CPU, 2 threads):
//   node scripts/ort_run.js MODEL IN.npy OUT.npy [SECONDS_OUT.txt] [--batch B]
// Writes the first output; SECONDS_OUT.txt, if given, receives the run's time. --batch B runs the
// input's first axis in slices of B (a large evaluation set) and concatenates the outputs.
'use strict';
const fs = require('fs');
const { readNpy, writeNpy, ort } = require('./npy.js');

async function main() {
  const argv = process.argv.slice(2);
  let batch = 0;
  const b = argv.indexOf('--batch');
  if (b >= 0) {
    batch = Number(argv[b + 1]);
    if (!(batch >= 1)) throw new Error(`--batch needs a positive number, got ${argv[b + 1]}`);
    argv.splice(b, 2);
  }
  const [model, input, output, timing] = argv;
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2 });
  const x = readNpy(input);
  const n = x.dims[0];
  const step = batch || n;
  const per = x.data.length / Math.max(1, n);
  const parts = [];
  let seconds = 0;
  for (let i = 0; i < n; i += step) {
    const count = Math.min(step, n - i);
    const slice = new ort.Tensor(x.type, x.data.subarray(i * per, (i + count) * per), [count, ...x.dims.slice(1)]);
    const start = process.hrtime.bigint();
    const out = await session.run({ [session.inputNames[0]]: slice });
    seconds += Number(process.hrtime.bigint() - start) / 1e9;
    parts.push(out[session.outputNames[0]]);
  }
  let y = parts[0];
  if (parts.length > 1) {
    const total = parts.reduce((s, p) => s + p.data.length, 0);
    const data = new parts[0].data.constructor(total);
    let at = 0;
    for (const p of parts) { data.set(p.data, at); at += p.data.length; }
    y = new ort.Tensor(parts[0].type, data, [parts.reduce((s, p) => s + p.dims[0], 0), ...parts[0].dims.slice(1)]);
  }
  writeNpy(output, y);
  if (timing) fs.writeFileSync(timing, `${seconds}\n`);
}

main().catch(e => { console.error(e.message); process.exit(1); });

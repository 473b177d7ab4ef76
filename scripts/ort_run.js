// Runs an ONNX model on ONNX Runtime (CPU, 2 threads): node scripts/ort_run.js MODEL IN.npy OUT.npy
// [SECONDS_OUT.txt]. Writes the first output; the last argument, if given, receives the run's time.
'use strict';
const fs = require('fs');
const { readNpy, writeNpy, ort } = require('./npy.js');

async function main() {
  const [model, input, output, timing] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2 });
  const feeds = { [session.inputNames[0]]: readNpy(input) };
  const start = process.hrtime.bigint();
  const out = await session.run(feeds);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  writeNpy(output, out[session.outputNames[0]]);
  if (timing) fs.writeFileSync(timing, `${seconds}\n`);
}

main().catch(e => { console.error(e.message); process.exit(1); });

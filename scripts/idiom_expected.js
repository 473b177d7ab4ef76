// Expected outputs of the exporter-idiom graphs (tests/data/idioms/<name>/model.onnx) from ONNX
// Runtime: output_K.npy for each input_K.npy. Run after scripts/make_idiom_models.py:
//     node scripts/idiom_expected.js        (onnxruntime-node from scripts/install-peers.sh)
'use strict';
const fs = require('fs');
const path = require('path');
const { readNpy, writeNpy, ort } = require('./npy.js');

async function main() {
  const root = path.join(__dirname, '..', 'tests', 'data', 'idioms');
  for (const name of fs.readdirSync(root).sort()) {
    const dir = path.join(root, name);
    const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), { intraOpNumThreads: 1 });
    for (let k = 0; fs.existsSync(path.join(dir, `input_${k}.npy`)); ++k) {
      const feeds = { [session.inputNames[0]]: readNpy(path.join(dir, `input_${k}.npy`)) };
      const out = await session.run(feeds);
      writeNpy(path.join(dir, `output_${k}.npy`), out[session.outputNames[0]]);
      console.log(`${name} ${k}: ${out[session.outputNames[0]].dims.join('x')}`);
    }
  }
  console.log(`ONNX Runtime ${require(path.join(__dirname, '..', 'bench', 'node_modules', 'onnxruntime-node', 'package.json')).version}`);
}

main().catch(e => { console.error(e.message); process.exit(1); });

// Minimal .npy reading and writing (float32 and int64, C order) as ONNX Runtime tensors, for the
// scripts that run ONNX Runtime (idiom_expected.js, ort_run.js).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, '..', 'bench', 'node_modules', 'onnxruntime-node'));

// Minimal .npy for float32 and int64, C order.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.toString('latin1', 10, 10 + headerLen);
  const descr = /'descr': '([^']+)'/.exec(header)[1];
  const shape = /'shape': \(([^)]*)\)/.exec(header)[1].split(',').map(s => s.trim()).filter(s => s).map(Number);
  const data = buf.subarray(10 + headerLen);
  const copy = Buffer.from(data);
  if (descr === '<f4') return new ort.Tensor('float32', new Float32Array(copy.buffer, copy.byteOffset, copy.length / 4), shape);
  if (descr === '<i8') return new ort.Tensor('int64', new BigInt64Array(copy.buffer, copy.byteOffset, copy.length / 8), shape);
  throw new Error(`${file}: unsupported dtype ${descr}`);
}

function writeNpy(file, tensor) {
  const descr = tensor.type === 'float32' ? '<f4' : tensor.type === 'int64' ? '<i8' : null;
  if (!descr) throw new Error(`unsupported output type ${tensor.type}`);
  const shape = tensor.dims.length === 1 ? `(${tensor.dims[0]},)` : `(${tensor.dims.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head.writeUInt8(1, 6);
  head.writeUInt8(0, 7);
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), body]));
}

module.exports = { readNpy, writeNpy, ort };

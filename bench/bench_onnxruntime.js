#!/usr/bin/env node
// ONNX Runtime (CPU) throughput on an ONNX model, the peer figure for docs/results/speed.md.
//
// Install the runtime first (once): scripts/install-peers.sh
// Usage:
//   node bench/bench_onnxruntime.js --model models/resnet20.onnx [--batch 64] [--seconds 2]
//        [--threads 2] [--warmup 0.3] [--spin]
// Prints one JSON line: model, batch, threads, runs, median_ms, min_ms, images_per_s (from the
// median run), peak_rss_bytes (the whole process, so it includes Node itself), ort_version.
//
// The session uses intraOpNumThreads = --threads, interOpNumThreads = 1 and graph optimization
// level 'all'. Its intra-op pool waits passively between runs unless --spin is given: spinning
// threads burn whole scheduler ticks on a shared 2-core machine, and tern's pool (and
// bench/bench_pytorch.py's OMP_WAIT_POLICY=passive) wait passively too.
// Input: uniform random floats, shape taken from the model with its batch dimension set to --batch.
'use strict';

const fs = require('fs');
const path = require('path');

function fail(message) {
  process.stderr.write(`bench_onnxruntime: ${String(message).split('\n')[0]}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = { model: null, batch: 1, seconds: 2, threads: 2, warmup: 0.3, spin: false };
  const numeric = { batch: 'int', seconds: 'float', threads: 'int', warmup: 'float' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write('usage: node bench/bench_onnxruntime.js --model M.onnx [--batch N] [--seconds S] ' +
                           '[--threads T] [--warmup S] [--spin]\n');
      process.exit(0);
    }
    if (arg === '--spin') { args.spin = true; continue; }
    const match = /^--([a-z]+)(?:=(.*))?$/.exec(arg);
    if (!match || !(match[1] in args) || match[1] === 'spin') fail(`unknown argument '${arg}'`);
    const key = match[1];
    let value = match[2];
    if (value === undefined) {
      if (i + 1 >= argv.length) fail(`--${key} needs a value`);
      value = argv[++i];
    }
    if (numeric[key]) {
      const n = Number(value);
      const ok = numeric[key] === 'int' ? Number.isInteger(n) && n >= 1 : Number.isFinite(n) && n >= 0;
      if (!ok) fail(`--${key}: expected a ${numeric[key] === 'int' ? 'positive integer' : 'non-negative number'}, got '${value}'`);
      args[key] = n;
    } else {
      args[key] = value;
    }
  }
  if (!args.model) fail('--model is required');
  return args;
}

function loadOrt() {
  try {
    return require('onnxruntime-node');
  } catch (e) {
    fail(`cannot load onnxruntime-node (run scripts/install-peers.sh): ${e.message}`);
  }
}

// Input shape from the model's metadata: the first dimension is the batch; other symbolic
// dimensions cannot be guessed. Models without metadata get tern's [N,1,28,28].
function inputShape(session, batch) {
  const meta = (session.inputMetadata || [])[0];
  if (!meta || !meta.isTensor || !Array.isArray(meta.shape)) return [batch, 1, 28, 28];
  if (meta.type && meta.type !== 'float32') fail(`input '${meta.name}' is ${meta.type}, expected float32`);
  return meta.shape.map((d, i) => {
    const fixed = typeof d === 'number' && d > 0;
    if (i === 0) {
      if (fixed && d !== batch) fail(`model's batch dimension is fixed at ${d}; --batch ${batch} cannot run`);
      return batch;
    }
    if (!fixed) fail(`input '${meta.name}' has symbolic dimension ${i} ('${d}'); only the batch may be dynamic`);
    return d;
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(args.model)) fail(`${args.model}: no such file`);
  const ort = loadOrt();

  let session;
  try {
    session = await ort.InferenceSession.create(args.model, {
      executionProviders: ['cpu'],
      intraOpNumThreads: args.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      extra: { session: { intra_op: { allow_spinning: args.spin ? '1' : '0' } } },
    });
  } catch (e) {
    fail(`${args.model}: ${e.message}`);
  }

  const shape = inputShape(session, args.batch);
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.random() * 2 - 1;
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, shape) };

  const run = async () => {
    const start = process.hrtime.bigint();
    await session.run(feeds);
    return Number(process.hrtime.bigint() - start) / 1e6;
  };

  try {
    // Warm-up: at least 3 runs, and at least --warmup seconds.
    const warmupEnd = performance.now() + args.warmup * 1e3;
    for (let i = 0; i < 3 || performance.now() < warmupEnd; i++) await run();

    const times = [];
    const end = performance.now() + args.seconds * 1e3;
    do times.push(await run()); while (performance.now() < end);

    times.sort((a, b) => a - b);
    const mid = times.length >> 1;
    const median = times.length % 2 ? times[mid] : (times[mid - 1] + times[mid]) / 2;
    const ortVersion = (ort.env && ort.env.versions && ort.env.versions.node) ||
                       require('onnxruntime-node/package.json').version;
    console.log(JSON.stringify({
      model: path.basename(args.model, '.onnx'),
      batch: args.batch,
      threads: args.threads,
      intra_op_spinning: args.spin,
      runs: times.length,
      median_ms: median,
      min_ms: times[0],
      images_per_s: args.batch / (median / 1e3),
      peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
      ort_version: ortVersion,
    }));
  } catch (e) {
    fail(`${args.model}: ${e.message}`);
  } finally {
    await session.release();
  }
}

main().catch((e) => fail(e && e.message ? e.message : e));

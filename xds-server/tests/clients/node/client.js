#!/usr/bin/env node
// A grpc-js xDS client for the control plane's end-to-end tests; the same command line and
// output as ../grpcio_client.py:
//
//   node client.js --target xds:///SERVICE.NAMESPACE (--calls N | --until-file PATH)
//                  [--concurrency C] [--deadline-ms D] [--ready-timeout-s S]
//
// grpc-js-xds reads the bootstrap from GRPC_XDS_BOOTSTRAP (a file) or GRPC_XDS_BOOTSTRAP_CONFIG
// (the JSON) itself. The client waits until the channel is ready, makes unary
// grpc.health.v1.Health/Check calls (service "") from C concurrent workers, back to back, either
// N in all or until PATH exists, and prints one JSON line on stdout:
//
//   {"ok": n, "failed": n, "codes": {"UNAVAILABLE": n}, "first_error": "UNAVAILABLE: ..." | null,
//    "serving": {"SERVING": n}}
//
// Exit status: 0 when it ran (failed calls included), 2 for bad arguments, 3 when the channel was
// not ready within the ready timeout, 1 for anything else.
'use strict';

const fs = require('fs');
const Module = require('module');
const path = require('path');

// The packages live in the repository's .local/node/ (`scripts/bootstrap node`), outside the
// source tree; a node_modules/ beside this file (a hand-run `npm ci`) is used when that is absent.
// grpc-js-xds registers itself with the grpc-js its own require finds, so all three packages are
// loaded from the same place.
const installed = path.join(__dirname, '..', '..', '..', '..', '.local', 'node', 'package.json');
const load = Module.createRequire(fs.existsSync(installed) ? installed : __filename);
let grpc;
let protoLoader;
let grpcXds;
try {
  grpc = load('@grpc/grpc-js');
  protoLoader = load('@grpc/proto-loader');
  grpcXds = load('@grpc/grpc-js-xds');
} catch (error) {
  process.stderr.write(
    `client.js: the npm packages are not installed (run scripts/bootstrap node): ${error.message}\n`,
  );
  process.exit(1);
}

const EXIT_USAGE = 2;
const EXIT_NOT_READY = 3;
const USAGE = `usage: node client.js --target TARGET (--calls N | --until-file PATH)
                      [--concurrency C] [--deadline-ms D] [--ready-timeout-s S]

  --target TARGET        e.g. xds:///echo.prod.internal
  --calls N              make this many calls in all
  --until-file PATH      keep calling until PATH exists
  --concurrency C        workers (default 1)
  --deadline-ms D        per-call deadline (default 5000)
  --ready-timeout-s S    how long to wait for the channel to be ready (default 30)`;

function usageError(message) {
  process.stderr.write(`${USAGE}\nclient.js: error: ${message}\n`);
  process.exit(EXIT_USAGE);
}

function positive(flag, text) {
  if (!/^[0-9]+$/.test(text) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    usageError(`argument ${flag}: '${text}' must be a whole number, 1 or more`);
  }
  return Number(text);
}

function parseArgs(argv) {
  const args = { concurrency: 1, deadlineMs: 5000, readyTimeoutS: 30 };
  const flags = {
    '--target': (v) => { args.target = v; },
    '--calls': (v) => { args.calls = positive('--calls', v); },
    '--until-file': (v) => { args.untilFile = v; },
    '--concurrency': (v) => { args.concurrency = positive('--concurrency', v); },
    '--deadline-ms': (v) => { args.deadlineMs = positive('--deadline-ms', v); },
    '--ready-timeout-s': (v) => { args.readyTimeoutS = positive('--ready-timeout-s', v); },
  };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let value;
    if (flag === '-h' || flag === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    const set = flags[flag];
    if (set === undefined) usageError(`unrecognized argument: ${flag}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) usageError(`argument ${flag}: expected one argument`);
      value = argv[++i];
    }
    set(value);
  }
  if (args.target === undefined) usageError('the following arguments are required: --target');
  if ((args.calls === undefined) === (args.untilFile === undefined)) {
    usageError('give exactly one of --calls and --until-file');
  }
  return args;
}

function loadHealth() {
  const definition = protoLoader.loadSync(path.join(__dirname, 'health.proto'), {
    keepCase: true,
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).grpc.health.v1;
}

function check(client, deadlineMs) {
  return new Promise((resolve) => {
    client.Check({ service: '' }, { deadline: Date.now() + deadlineMs }, (error, response) => {
      resolve({ error, response });
    });
  });
}

function describe(error) {
  return `${grpc.status[error.code] || error.code}: ${error.details}`;
}

class Tally {
  constructor() {
    this.ok = 0;
    this.failed = 0;
    this.codes = {};
    this.serving = {};
    this.firstError = null;
  }

  record({ error, response }) {
    if (error) {
      // A non-gRPC error here is a bug in this script or grpc-js: fail the run, do not count it.
      if (typeof error.code !== 'number') throw error;
      const code = grpc.status[error.code] || String(error.code);
      this.failed += 1;
      this.codes[code] = (this.codes[code] || 0) + 1;
      if (this.firstError === null) this.firstError = describe(error);
    } else {
      this.ok += 1;
      this.serving[response.status] = (this.serving[response.status] || 0) + 1;
    }
  }

  summary() {
    return {
      ok: this.ok,
      failed: this.failed,
      codes: this.codes,
      first_error: this.firstError,
      serving: this.serving,
    };
  }
}

async function notReady(client, args) {
  // One call without waiting shows the resolver's or the connection's error (e.g. a missing
  // bootstrap), which a bare timeout would hide.
  const { error } = await check(client, 1000);
  const detail = error ? describe(error) : 'a probe call succeeded just after the timeout';
  let bootstrap = process.env.GRPC_XDS_BOOTSTRAP;
  if (bootstrap === undefined && process.env.GRPC_XDS_BOOTSTRAP_CONFIG === undefined) {
    bootstrap = 'unset (set GRPC_XDS_BOOTSTRAP to a bootstrap file)';
  } else if (bootstrap !== undefined) {
    // grpc-js-xds reports an unreadable or malformed bootstrap only as "Cannot read properties
    // of null": say which it is.
    try {
      JSON.parse(fs.readFileSync(bootstrap, 'utf8'));
    } catch (problem) {
      bootstrap = `${bootstrap}, which cannot be used: ${problem.message}`;
    }
  }
  process.stderr.write(
    `client.js: channel to ${args.target} not ready within ${args.readyTimeoutS} s ` +
      `(GRPC_XDS_BOOTSTRAP: ${bootstrap}); last error: ${detail}\n`,
  );
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // Registers the xds: resolver and the xDS load balancing policies with grpc-js; it must run
  // before the client (and so its channel) is created.
  grpcXds.register();
  const { Health } = loadHealth();
  const client = new Health(args.target, grpc.credentials.createInsecure());

  const ready = await new Promise((resolve) => {
    client.waitForReady(Date.now() + args.readyTimeoutS * 1000, (error) => resolve(!error));
  });
  if (!ready) {
    await notReady(client, args);
    client.close();
    return EXIT_NOT_READY;
  }

  const tally = new Tally();
  let left = args.calls;
  // Single-threaded: taking a call from the budget cannot race.
  const take = () => {
    if (args.untilFile !== undefined) return !fs.existsSync(args.untilFile);
    if (left === 0) return false;
    left -= 1;
    return true;
  };
  const worker = async () => {
    while (take()) tally.record(await check(client, args.deadlineMs));
  };
  await Promise.all(Array.from({ length: args.concurrency }, worker));
  client.close();
  await new Promise((resolve) => process.stdout.write(`${JSON.stringify(tally.summary())}\n`, resolve));
  return 0;
}

// The xDS client keeps its ADS stream and timers alive after the channel closes, so the process
// exits explicitly once the summary is written.
main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`client.js: ${error && error.stack ? error.stack : error}\n`);
    process.exit(1);
  },
);

// Loads a Firefox Profiler processed profile (JSON, gzipped or not) with the Firefox Profiler's
// own code, as Mozilla publishes it on npm: @firefox-devtools/profiler-cli bundles the web app's
// unserializeProfileOfArbitraryFormat (gzip, format checks, the processed-profile upgraders)
// and its loadProfile/finalizeProfileView steps. For every thread it then computes what the
// profiler's panels compute (samples, the call tree, the marker table), and checks that the
// profiler counts the threads, sample weights and markers the file holds: the profiler is a
// tolerant reader, which may drop what it cannot use instead of failing.
//
//   node load.mjs PROFILE        (the pinned Node of package.json: see .ci/setup)
//
// Prints one JSON object: {"ok", "errors", "threads": [{"name", "samples", "markers",
// "functions"}]}; exits 0 when the profile loads and every count matches, 1 otherwise.
// The CLI runs as a background session: each run gets its own, always stopped, and killed
// if it does not stop (a profile that sends the profiler into a loop).
// Env: FXPROF_CLI (default: dist/profiler-cli.js beside this file's node_modules, or
// /opt/amprof-ci/firefox-profiler's), FXPROF_TIMEOUT_MS per command (default 60000).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';

const file = process.argv[2];
if (!file) {
  console.error('usage: load.mjs PROFILE.json[.gz]');
  process.exit(2);
}
const timeout = Number(process.env.FXPROF_TIMEOUT_MS || 60000);
const cli =
  process.env.FXPROF_CLI ||
  '/opt/amprof-ci/firefox-profiler/node_modules/@firefox-devtools/profiler-cli/dist/profiler-cli.js';
if (!fs.existsSync(cli)) {
  console.error(`no profiler-cli at ${cli}: run .ci/setup`);
  process.exit(2);
}

const errors = [];
// What the file holds, to compare with what the profiler made of it (null: not even JSON,
// which the profiler is still given to refuse).
let inFile = null;
try {
  let raw = fs.readFileSync(file);
  if (raw[0] === 0x1f && raw[1] === 0x8b) raw = zlib.gunzipSync(raw);
  inFile = JSON.parse(raw.toString('utf8')).threads.map((t) => ({
    samples: t.samples.stack.reduce(
      (sum, stack, i) => (stack === null ? sum : sum + (t.samples.weight ? t.samples.weight[i] : 1)),
      0,
    ),
    markers: t.markers.length,
  }));
} catch (e) {
  errors.push(`not a profile amprof writes: ${e.message}`);
}
const threads = [];
const sessionDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fxp-'));
const session = `amprof${process.pid}`;
const env = { ...process.env, PROFILER_CLI_SESSION_DIR: sessionDir, PROFILER_CLI_NO_SYMBOLICATE: '1' };
const run = (...args) => {
  const r = spawnSync(process.execPath, [cli, ...args, '--session', session], {
    env,
    encoding: 'utf8',
    timeout,
  });
  if (r.error || r.status !== 0) {
    const why = r.error ? (r.error.code === 'ETIMEDOUT' ? `timed out after ${timeout} ms` : r.error.message) : `exit ${r.status}`;
    const said = `${r.stdout || ''}${r.stderr || ''}`.trim().split('\n').slice(0, 4).join(' | ');
    throw new Error(`profiler-cli ${args.join(' ')}: ${why}: ${said}`);
  }
  return r.stdout;
};
try {
  run('load', path.resolve(file));
  const list = JSON.parse(run('thread', 'list', '--json', '--limit', '0'));
  if (inFile && list.totalThreadCount !== inFile.length) {
    errors.push(`the profiler sees ${list.totalThreadCount} threads, the file has ${inFile.length}`);
  }
  for (const t of list.threads) {
    const h = t.threadHandle;
    const samples = JSON.parse(run('thread', 'samples', '--json', '--include-idle', '--thread', h));
    run('thread', 'samples-top-down', '--thread', h, '--max-lines', '100000');
    const markers = JSON.parse(run('thread', 'markers', '--json', '--thread', h));
    run('thread', 'markers', '--list', '--limit', '0', '--thread', h);
    const seen = {
      name: t.name,
      samples: samples.categoryBreakdown.totalSamples,
      markers: markers.totalMarkerCount,
      functions: samples.topFunctionsByTotal.map((f) => f.name),
    };
    threads.push(seen);
    const want = inFile && inFile[t.threadIndex];
    if (inFile && !want) {
      errors.push(`thread ${h}: no thread ${t.threadIndex} in the file`);
    } else if (want) {
      if (want.samples !== seen.samples) errors.push(`thread ${h}: the profiler counts ${seen.samples} samples, the file has ${want.samples}`);
      if (want.markers !== seen.markers) errors.push(`thread ${h}: the profiler counts ${seen.markers} markers, the file has ${want.markers}`);
    }
  }
} catch (e) {
  errors.push(`the Firefox Profiler rejected it: ${e.message}`);
} finally {
  let daemon = null;
  try {
    daemon = JSON.parse(fs.readFileSync(path.join(sessionDir, `${session}.json`), 'utf8')).pid;
  } catch {}
  spawnSync(process.execPath, [cli, 'stop', '--session', session], { env, timeout: 10000 });
  if (Number.isInteger(daemon)) {
    try {
      // Only if the pid is still this session's daemon (pids are reused).
      const command = fs.readFileSync(`/proc/${daemon}/cmdline`, 'utf8');
      if (command.includes('--daemon') && command.includes(session)) process.kill(daemon, 'SIGKILL');
    } catch {}
  }
  fs.rmSync(sessionDir, { recursive: true, force: true });
}
console.log(JSON.stringify({ ok: errors.length === 0, errors, threads }));
process.exit(errors.length === 0 ? 0 : 1);

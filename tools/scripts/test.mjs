#!/usr/bin/env node
// `npm test`: build, lint and typecheck every project, then run every project's tests one project at a
// time (the suites load models and start brokers; two cores are shared), and print one closing line.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { root, workspaceEnv } from './workspace.mjs';

const env = workspaceEnv({ NODE_LLAMA_CPP_GPU: process.env.NODE_LLAMA_CPP_GPU ?? 'false' });
const projects = ['protocol', 'tools', 'control-plane', 'device-agent', 'dashboard'];
const projectDirs = { protocol: 'libs/protocol', tools: 'tools', 'control-plane': 'apps/control-plane', 'device-agent': 'apps/device-agent', dashboard: 'apps/dashboard' };

function run(args) {
  console.log(`\n$ nx ${args.join(' ')}`);
  const result = spawnSync('npx', ['nx', ...args, '--outputStyle=stream'], { cwd: root, env, stdio: 'inherit' });
  return result.status ?? 1;
}

for (const p of projects) rmSync(join(root, projectDirs[p], 'test-output'), { recursive: true, force: true });

let status = run(['run-many', '-t', 'build', 'lint', 'typecheck']);
if (status === 0) status = run(['run-many', '-t', 'test', '--parallel=1', '--nxBail=false']);

let passed = 0;
let failed = 0;
let skipped = 0;
for (const p of projects) {
  const file = join(root, projectDirs[p], 'test-output', 'vitest.json');
  if (!existsSync(file)) continue;
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests ?? 0;
  failed += report.numFailedTests ?? 0;
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
}
if (status !== 0 && failed === 0) failed = 1; // a build, lint or typecheck failure counts as a failure
console.log(`\ntests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(status === 0 && failed === 0 ? 0 : 1);

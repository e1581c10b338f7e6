import { loadavg } from 'node:os';
import { join } from 'node:path';
import { installInterruptCleanup } from './cleanup.js';
import { envelope, writeResult } from './results.js';
import { Flags, type Suite } from './suite.js';
import { enrollSuite } from './suites/enroll.js';
import { fleetSuite } from './suites/fleet.js';
import { gatewaySuite } from './suites/gateway.js';
import { livenessSuite } from './suites/liveness.js';
import { placementSuite } from './suites/placement.js';
import { restartSuite } from './suites/restart.js';

export const SUITES: readonly Suite[] = [gatewaySuite, fleetSuite, livenessSuite, placementSuite, restartSuite, enrollSuite];

/** `npm run bench` with no suite named runs these, in this order. */
export const DEFAULT_SUITES: readonly string[] = SUITES.map((s) => s.name);

function help(): string {
  return [
    'usage: npm run bench -- [suite ...] [--quick] [--flag value ...]',
    '  no suite: all of them; --quick: tiny sizes and short windows (a smoke run, figures not meaningful);',
    '  --results DIR (bench/results); --no-build (skip the Nx build of the bundles)',
    '',
    ...SUITES.flatMap((s) => [`  ${s.name.padEnd(10)} ${s.description}`, ...s.flagsHelp.map((h) => `             ${h}`)]),
  ].join('\n');
}

/** Runs the named suites (or the default set) one after another; returns the process exit code. */
export async function main(argv: readonly string[], root: string): Promise<number> {
  const { suites: names, flags } = Flags.parse(argv);
  if (flags.bool('help')) {
    console.log(help());
    return 0;
  }
  const unknown = names.filter((n) => !SUITES.some((s) => s.name === n));
  if (unknown.length > 0) {
    console.error(`unknown suite(s): ${unknown.join(', ')}\n\n${help()}`);
    return 2;
  }
  const chosen = (names.length > 0 ? names : DEFAULT_SUITES).map((n) => SUITES.find((s) => s.name === n)).filter((s): s is Suite => s !== undefined);
  installInterruptCleanup();
  const resultsDir = flags.string('results', join(root, 'bench/results'));
  const quick = flags.bool('quick');
  let failed = 0;
  for (const suite of chosen) {
    const t0 = performance.now();
    const load = loadavg()[0] ?? 0;
    console.log(`\n== ${suite.name}: ${suite.description}${quick ? ' (quick)' : ''}`);
    try {
      const outcome = await suite.run({ root, resultsDir, quick, flags, log: (line) => console.log(`  ${line}`) });
      const data = envelope(suite.name, { ...outcome.options, quick }, load, outcome.result);
      console.log(`-- ${suite.name} (${((performance.now() - t0) / 1000).toFixed(0)} s, load ${load.toFixed(1)} -> ${data.loadAverage.end.toFixed(1)}):`);
      for (const line of outcome.summary) console.log(line);
      console.log(`written to ${await writeResult(resultsDir, data)}`);
    } catch (error) {
      failed++;
      console.error(`!! ${suite.name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    }
  }
  return failed > 0 ? 1 : 0;
}

// `node tools/bench/report.mjs [results dir]`: prints the markdown tables of docs/benchmarks.md from the latest result
// of each suite (bench/results/<suite>-latest.json). Needs the tools built (`npx nx build @flotilla/tools`).
import { join } from 'node:path';
import { root } from '../scripts/workspace.mjs';

const { readLatest } = await import(join(root, 'tools/dist/bench/results.js'));
const { renderReport } = await import(join(root, 'tools/dist/bench/report.js'));
process.stdout.write(renderReport(await readLatest(process.argv[2] ?? join(root, 'bench/results'))));

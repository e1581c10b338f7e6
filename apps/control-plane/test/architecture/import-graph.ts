import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, relative, sep } from 'node:path';
import ts from 'typescript';

/**
 * The control plane's layering, one way: the composition root (`app/`, `main.ts`, `cli.ts`) above
 * observability and gateway, above models, above devices, above identity, above platform.
 * Each domain lists the domains it may import; a domain always may import itself.
 */
export const DOMAIN_RULES: Readonly<Record<string, readonly string[]>> = {
  app: ['observability', 'gateway', 'models', 'devices', 'identity', 'platform'],
  observability: ['models', 'devices', 'identity', 'platform'],
  gateway: ['models', 'devices', 'identity', 'platform'],
  models: ['devices', 'identity', 'platform'],
  devices: ['identity', 'platform'],
  identity: ['platform'],
  platform: [],
};

/** One relative import between two files of the source tree (paths relative to `src`, posix). */
export interface ImportEdge {
  from: string;
  to: string;
  fromDomain: string;
  toDomain: string;
}

export interface LayeringReport {
  /** imports a domain's rules do not allow */
  violations: ImportEdge[];
  /** domain-level cycles, each as the domains on it (first repeated at the end) */
  cycles: string[][];
  /** files whose folder is no known domain */
  unknown: string[];
}

/** The domain a source file belongs to: its top folder; the entry files and the generated Prisma client are placed explicitly. */
export function domainOf(file: string): string | undefined {
  if (/^(main|cli)(\.spec)?\.ts$/.test(file)) return 'app'; // the entry points and their specs
  const top = file.split('/')[0] ?? '';
  if (top === 'generated') return 'platform';
  return top in DOMAIN_RULES ? top : undefined;
}

/** Reads every `.ts` file under `srcDir` (the generated client excepted) as a map of posix path -> text. */
export function readSourceTree(srcDir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) {
        if (name !== 'generated') walk(path);
      } else if (name.endsWith('.ts')) {
        files.set(relative(srcDir, path).split(sep).join('/'), readFileSync(path, 'utf8'));
      }
    }
  };
  walk(srcDir);
  return files;
}

/** Every relative import/export-from/dynamic import of each file, resolved to a path relative to `src`. */
export function importEdges(files: ReadonlyMap<string, string>): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const [file, text] of files) {
    // preProcessFile sees `import`, `import type`, `export ... from` and `import()` alike, without a full parse.
    const { importedFiles } = ts.preProcessFile(text, true, true);
    for (const { fileName } of importedFiles) {
      if (!fileName.startsWith('.')) continue;
      const to = posix.normalize(posix.join(posix.dirname(file), fileName)).replace(/\.js$/, '.ts');
      if (to.startsWith('..')) continue; // outside src (e.g. package.json)
      edges.push({ from: file, to, fromDomain: domainOf(file) ?? '?', toDomain: domainOf(to) ?? '?' });
    }
  }
  return edges;
}

/** Checks the layering rules and looks for cycles in the graph of domains. */
export function checkLayering(files: ReadonlyMap<string, string>): LayeringReport {
  const edges = importEdges(files);
  const unknown = [...files.keys()].filter((file) => domainOf(file) === undefined);
  const violations = edges.filter(
    (edge) => edge.fromDomain !== edge.toDomain && !(DOMAIN_RULES[edge.fromDomain] ?? []).includes(edge.toDomain),
  );
  const graph = new Map<string, Set<string>>();
  for (const edge of edges) {
    if (edge.fromDomain === edge.toDomain) continue;
    const targets = graph.get(edge.fromDomain) ?? new Set<string>();
    targets.add(edge.toDomain);
    graph.set(edge.fromDomain, targets);
  }
  return { violations, cycles: findCycles(graph), unknown };
}

/** One cycle per strongly connected group of domains (depth-first search; the graph has a handful of nodes). */
function findCycles(graph: ReadonlyMap<string, ReadonlySet<string>>): string[][] {
  const cycles: string[][] = [];
  const seen = new Set<string>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') {
        const cycle = [...stack.slice(stack.indexOf(next)), next];
        const key = [...new Set(cycle)].sort().join(',');
        if (!seen.has(key)) {
          seen.add(key);
          cycles.push(cycle);
        }
      } else if (state.get(next) === undefined) {
        visit(next);
      }
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (state.get(node) === undefined) visit(node);
  return cycles;
}

/** A readable line per problem, for test failure messages. */
export function describeReport(report: LayeringReport): string[] {
  return [
    ...report.violations.map((edge) => `${edge.from} (${edge.fromDomain}) imports ${edge.to} (${edge.toDomain})`),
    ...report.cycles.map((cycle) => `domain cycle: ${cycle.join(' -> ')}`),
    ...report.unknown.map((file) => `${file} is in no domain folder`),
  ];
}

export const srcDirOf = (testFileUrl: string): string => join(dirname(new URL(testFileUrl).pathname), '..', '..', 'src');

import {
  FLEET_API_VERSION,
  FleetFileSchema,
  FleetMetadataSchema,
  RoutingSchema,
  type FleetFile,
  type FleetFileIssue,
  type Routing,
} from '@flotilla/protocol';
import { isMap, isNode, isPair, isScalar, isSeq, LineCounter, parseDocument, stringify, type Document } from 'yaml';

/**
 * The fleet file (`fleet.yaml`): the models, deployments and routing of a fleet, one device or many, as data.
 * `flotilla apply -f fleet.yaml` / `POST /api/v1/fleet/apply` make the control plane match it; `flotilla export` /
 * `GET /api/v1/fleet/export` write the current state back in the same format. See docs/fleet-file.md. Its schemas
 * are the REST contract's (`@flotilla/protocol`); this file reads and writes the YAML.
 */
export { FLEET_API_VERSION, FleetFileSchema, FleetMetadataSchema, RoutingSchema, type FleetFile, type FleetFileIssue, type Routing };

export const DEFAULT_ROUTING: Routing = RoutingSchema.parse({});

/** Names declared twice, checked on the raw data so they are listed together with the schema's problems. */
function duplicateIssues(data: unknown): { path: (string | number)[]; message: string }[] {
  const out: { path: (string | number)[]; message: string }[] = [];
  if (!data || typeof data !== 'object') return out;
  for (const [section, what] of [
    ['models', 'model'],
    ['deployments', 'deployment'],
  ] as const) {
    const list: unknown = (data as Record<string, unknown>)[section];
    if (!Array.isArray(list)) continue;
    const seen = new Map<string, number>();
    list.forEach((item: unknown, i) => {
      const name: unknown = item && typeof item === 'object' ? (item as Record<string, unknown>).name : undefined;
      if (typeof name !== 'string') return;
      const first = seen.get(name);
      if (first === undefined) seen.set(name, i);
      else out.push({ path: [section, i, 'name'], message: `${what} ${name} is declared twice (first at index ${first})` });
    });
  }
  return out;
}

// Fields that are text even when they look like numbers or booleans to YAML (a sha256 of digits, `rack: 12`).
const TEXT_KEYS = new Set(['name', 'model', 'sha256', 'quantization', 'sourceUrl', 'description', 'baseUrl', 'apiKeyEnv']);
// Containers whose values are all text; under `tiers` every list is model names.
const TEXT_CONTAINERS = new Set(['labelSelector', 'pinnedDeviceIds']);

/** Turns plain numeric or boolean scalars back into their source text where the schema expects text. */
function keepText(node: unknown, textual: boolean, parentKey = ''): void {
  if (isScalar(node)) {
    if (textual && (typeof node.value === 'number' || typeof node.value === 'boolean') && node.source !== undefined) node.value = node.source;
    return;
  }
  if (isSeq(node)) {
    for (const item of node.items) keepText(item, textual);
    return;
  }
  if (!isMap(node)) return;
  for (const pair of node.items) {
    if (!isPair(pair)) continue;
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    keepText(pair.value, textual || TEXT_KEYS.has(key) || TEXT_CONTAINERS.has(key) || parentKey === 'tiers', key);
  }
}

export class FleetFileError extends Error {
  constructor(readonly issues: FleetFileIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'FleetFileError';
  }
}

export function formatIssue(i: FleetFileIssue): string {
  const where = i.line > 0 ? `line ${i.line}, column ${i.column}: ` : '';
  return `${where}${i.path ? `${i.path}: ` : ''}${i.message}`;
}

/** A parsed fleet file and a way to point at any of its parts (for errors found later, e.g. unknown models). */
export interface ParsedFleetFile {
  file: FleetFile;
  locate: (path: (string | number)[], message: string) => FleetFileIssue;
}

/** Parses and validates YAML (JSON is YAML too); throws FleetFileError listing every problem with its line. */
export function parseFleetFile(text: string): ParsedFleetFile {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true, merge: false });
  if (doc.errors.length > 0) {
    throw new FleetFileError(
      doc.errors.map((e) => ({
        line: e.linePos?.[0].line ?? 0,
        column: e.linePos?.[0].col ?? 0,
        path: '',
        message: (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, ''),
      })),
    );
  }
  const locate = (path: (string | number)[], message: string) => locateIn(doc, lineCounter, path, message);
  keepText(doc.contents, false);
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new FleetFileError([{ line: 0, column: 0, path: '', message: (error as Error).message }]);
  }
  if (data === null || data === undefined) throw new FleetFileError([{ line: 1, column: 1, path: '', message: 'the fleet file is empty' }]);
  const parsed = FleetFileSchema.safeParse(data);
  const problems = [
    ...(parsed.success ? [] : parsed.error.issues.map((i) => ({ path: i.path.filter((p): p is string | number => typeof p !== 'symbol'), message: i.message }))),
    ...duplicateIssues(data),
  ];
  if (!parsed.success || problems.length > 0) throw new FleetFileError(problems.map((p) => locate(p.path, p.message)));
  return { file: parsed.data, locate };
}

function locateIn(doc: Document, lines: LineCounter, path: (string | number)[], message: string): FleetFileIssue {
  // The deepest node that exists: a missing key is reported at the map that should hold it.
  let line = 0;
  let column = 0;
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const pos = lines.linePos(node.range[0]);
      line = pos.line;
      column = pos.col;
      break;
    }
  }
  return { line, column, path: formatPath(path), message };
}

export function formatPath(path: (string | number)[]): string {
  return path.reduce<string>((out, p) => (typeof p === 'number' ? `${out}[${p}]` : out ? `${out}.${p}` : p), '');
}

/** Writes a fleet file; `parseFleetFile(writeFleetFile(f))` gives `f` back. */
export function writeFleetFile(file: FleetFile, header?: string): string {
  const body = stringify(file, { lineWidth: 0, aliasDuplicateObjects: false });
  return header ? `${header.split('\n').map((l) => `# ${l}`.trimEnd()).join('\n')}\n${body}` : body;
}

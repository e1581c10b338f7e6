import { ModelNameSchema } from '@flotilla/protocol';
import { isMap, isNode, isPair, isScalar, isSeq, LineCounter, parseDocument, stringify, type Document } from 'yaml';
import { z } from 'zod';
import { ModelInputSchema, MODEL_TIERS } from '../catalog/catalog.service.js';
import { DeploymentInputSchema } from '../deployments/deployments.service.js';

/**
 * The fleet file (`fleet.yaml`): the models, deployments and routing of a fleet, one device or many, as data.
 * `flotilla apply -f fleet.yaml` / `POST /api/v1/fleet/apply` make the control plane match it; `flotilla export` /
 * `GET /api/v1/fleet/export` write the current state back in the same format. See docs/fleet-file.md.
 */
export const FLEET_API_VERSION = 'flotilla/v1';

const TierSchema = z.enum(MODEL_TIERS);
const TokensSchema = z.int().min(1).max(1_048_576);

/** Routing for the OpenAI-compatible gateway: tiers, `model: auto` and the cloud fallback. Stored as given. */
export const RoutingSchema = z.strictObject({
  /** the tier `model: auto` starts from */
  defaultTier: TierSchema.default('small'),
  /** models serving each tier (by catalog name); an empty list means every catalog model of that tier */
  tiers: z
    .strictObject({
      small: z.array(ModelNameSchema).max(64).default([]),
      medium: z.array(ModelNameSchema).max(64).default([]),
      large: z.array(ModelNameSchema).max(64).default([]),
    })
    .default({ small: [], medium: [], large: [] }),
  auto: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** prompts longer than this (tokens) skip the tier; absent: the models' context length decides */
      maxPromptTokens: z.strictObject({ small: TokensSchema.optional(), medium: TokensSchema.optional(), large: TokensSchema.optional() }).default({}),
      /** requests with tools or a JSON schema start at this tier at least */
      toolsMinTier: TierSchema.default('small'),
      /** a failed or timed-out answer is retried on the next larger tier */
      escalateOnFailure: z.boolean().default(true),
      /** true: no served model at or above the picked tier is a 503; false: the largest served tier below answers */
      strictMinTier: z.boolean().default(false),
    })
    .default({ enabled: true, maxPromptTokens: {}, toolsMinTier: 'small', escalateOnFailure: true, strictMinTier: false }),
  /** an OpenAI-compatible endpoint used when no device can serve; the key comes from an environment variable */
  cloudFallback: z
    .strictObject({
      enabled: z.boolean().default(false),
      baseUrl: z.url({ protocol: /^https?$/ }).max(2048).optional(),
      model: z.string().min(1).max(128).optional(),
      /** name of the environment variable holding the API key (never the key itself) */
      apiKeyEnv: z
        .string()
        .regex(/^[A-Z_][A-Z0-9_]{0,127}$/, 'expected an environment variable name such as OPENAI_API_KEY')
        .optional(),
      timeoutMs: z.int().min(100).max(600_000).default(30_000),
    })
    .refine((c) => !c.enabled || (c.baseUrl !== undefined && c.model !== undefined), 'an enabled cloud fallback needs baseUrl and model')
    .default({ enabled: false, timeoutMs: 30_000 }),
  /** keep a multi-turn chat on the device that answered it before */
  sessionAffinity: z.boolean().default(true),
  /** requests in flight per device before spilling to another one */
  maxConcurrentPerDevice: z.int().min(1).max(1024).default(10),
  requestTimeoutMs: z.int().min(100).max(600_000).default(30_000),
  /** failovers per request */
  maxRetries: z.int().min(0).max(10).default(2),
});
export type Routing = z.output<typeof RoutingSchema>;
export const DEFAULT_ROUTING: Routing = RoutingSchema.parse({});

export const FleetMetadataSchema = z.strictObject({
  name: z.string().min(1).max(128).optional(),
  description: z.string().max(2048).optional(),
});

export const FleetFileSchema = z
  .strictObject({
    apiVersion: z.literal(FLEET_API_VERSION, { message: `expected apiVersion: ${FLEET_API_VERSION}` }),
    kind: z.literal('Fleet', { message: 'expected kind: Fleet' }),
    metadata: FleetMetadataSchema.optional(),
    models: z.array(ModelInputSchema).max(1000).default([]),
    deployments: z.array(DeploymentInputSchema).max(1000).default([]),
    /** absent: routing stays as it is */
    routing: RoutingSchema.optional(),
  });
export type FleetFile = z.output<typeof FleetFileSchema>;

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

/** One problem in a fleet file, with where it is (1-based line and column; 0 when unknown). */
export interface FleetFileIssue {
  line: number;
  column: number;
  /** e.g. `deployments[1].replicas` */
  path: string;
  message: string;
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

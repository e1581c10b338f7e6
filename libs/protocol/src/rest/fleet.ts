import { z } from 'zod';
import { ModelNameSchema } from '../schemas/common.js';
import { DeploymentInputSchema } from './deployments.js';
import { ModelInputSchema, ModelTierSchema } from './models.js';

/**
 * The fleet file (`fleet.yaml`): the models, deployments and routing of a fleet, as data. `POST /api/v1/fleet/apply`
 * makes the control plane match it; `GET /api/v1/fleet/export` writes the current state in the same format.
 * See docs/fleet-file.md.
 */
export const FLEET_API_VERSION = 'flotilla/v1';

const TokensSchema = z.int().min(1).max(1_048_576);

/** Routing for the OpenAI-compatible gateway: tiers, `model: auto` and the cloud fallback. Stored as given. */
export const RoutingSchema = z.strictObject({
  /** the tier `model: auto` starts from */
  defaultTier: ModelTierSchema.default('small'),
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
      toolsMinTier: ModelTierSchema.default('small'),
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
/** `GET /api/v1/fleet/routing` answer: every field filled in. */
export type Routing = z.output<typeof RoutingSchema>;

export const FleetMetadataSchema = z.strictObject({
  name: z.string().min(1).max(128).optional(),
  description: z.string().max(2048).optional(),
});

/** The fleet file's content once YAML is parsed. */
export const FleetFileSchema = z.strictObject({
  apiVersion: z.literal(FLEET_API_VERSION, { message: `expected apiVersion: ${FLEET_API_VERSION}` }),
  kind: z.literal('Fleet', { message: 'expected kind: Fleet' }),
  metadata: FleetMetadataSchema.optional(),
  models: z.array(ModelInputSchema).max(1000).default([]),
  deployments: z.array(DeploymentInputSchema).max(1000).default([]),
  /** absent: routing stays as it is */
  routing: RoutingSchema.optional(),
});
export type FleetFile = z.output<typeof FleetFileSchema>;

/** `true`/`false` as JSON, or `"true"`/`"1"`/`"false"`/`"0"` as a query string carries them. */
const FlagSchema = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0'])])
  .transform((v) => v === true || v === 'true' || v === '1')
  .optional();

/** `POST /api/v1/fleet/apply` body. */
export const FleetApplyRequestSchema = z.strictObject({
  /** the fleet file's text (YAML or JSON) */
  yaml: z.string().min(1, 'the fleet file is empty').max(1024 * 1024),
  /** report what would change, change nothing */
  dryRun: FlagSchema,
  /** also delete deployments and models that are not in the file */
  prune: FlagSchema,
});
export type FleetApplyRequest = z.input<typeof FleetApplyRequestSchema>;

/** `POST /api/v1/fleet/apply` query: the same flags (the body's win). */
export const FleetApplyQuerySchema = z.object({ dryRun: FlagSchema, prune: FlagSchema });

export const FLEET_CHANGE_KINDS = ['model', 'deployment', 'routing', 'metadata'] as const;
export const FLEET_CHANGE_ACTIONS = ['create', 'update', 'delete', 'unchanged'] as const;
export type FleetChangeAction = (typeof FLEET_CHANGE_ACTIONS)[number];

/** One line of an apply's diff. */
export const FleetChangeSchema = z.strictObject({
  kind: z.enum(FLEET_CHANGE_KINDS),
  name: z.string(),
  action: z.enum(FLEET_CHANGE_ACTIONS),
  /** for updates: the fields that differ */
  fields: z.array(z.string()).optional(),
});
export type FleetChange = z.infer<typeof FleetChangeSchema>;

/** `POST /api/v1/fleet/apply` answer. */
export const FleetApplyResultSchema = z.strictObject({
  dryRun: z.boolean(),
  /** false: the control plane already matched the file (applying it again changes nothing) */
  changed: z.boolean().describe('false: the control plane already matched the file'),
  /** one line, e.g. `1 created, 2 updated, 3 unchanged` or `no changes: ...` */
  summary: z.string(),
  changes: z.array(FleetChangeSchema),
});
export type FleetApplyResult = z.infer<typeof FleetApplyResultSchema>;

/** One problem in a fleet file, with where it is (1-based line and column; 0 when unknown). */
export const FleetFileIssueSchema = z.strictObject({
  line: z.int().min(0),
  column: z.int().min(0),
  /** e.g. `deployments[1].replicas` */
  path: z.string(),
  message: z.string(),
});
export type FleetFileIssue = z.infer<typeof FleetFileIssueSchema>;

/** `error.details` of a 400 from `POST /api/v1/fleet/apply` for an invalid file: every problem found. */
export const FleetFileErrorDetailsSchema = z.object({ issues: z.array(FleetFileIssueSchema) });

/** `GET /api/v1/fleet/export` answer: the fleet file as YAML text (`application/yaml`). */
export const FleetExportSchema = z.string().describe('a fleet file (YAML), `apiVersion: flotilla/v1`');


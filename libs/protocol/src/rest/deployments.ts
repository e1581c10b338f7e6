import { z } from 'zod';
import { DeviceIdSchema, ModelNameSchema } from '../schemas/common.js';
import { IsoDateTimeSchema, pageOf } from './page.js';

/** Whether a deployment needs an accelerator (GPU) on the device. */
export const ACCELERATOR_NEEDS = ['any', 'preferred', 'required'] as const;
export const AcceleratorNeedSchema = z.enum(ACCELERATOR_NEEDS);
export type AcceleratorNeed = z.infer<typeof AcceleratorNeedSchema>;

export const DeploymentNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'expected a deployment name of 1-63 lowercase letters, digits, ".", "_", "-"');

export const LabelKeySchema = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$/, 'label keys are 1-63 letters, digits, ".", "_", "/", "-"');

/** A deployment's label selector: every key must be on the device with the same value. */
export const LabelSelectorSchema = z
  .record(LabelKeySchema, z.string().max(128))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

const fields = {
  /** the catalog model's name (or id) */
  model: ModelNameSchema,
  replicas: z.int().min(0).max(1000),
  labelSelector: LabelSelectorSchema,
  pinnedDeviceIds: z
    .array(DeviceIdSchema)
    .max(256)
    .refine((ids) => new Set(ids).size === ids.length, 'device ids must be unique'),
  /** tokens per sequence; null: the model's context length */
  contextSize: z.int().min(128).max(1_048_576).nullable(),
  parallel: z.int().min(1).max(64),
  accelerator: AcceleratorNeedSchema,
};

/** `POST /api/v1/deployments` body (the fleet file's `deployments[]` items are the same). */
export const DeploymentInputSchema = z.strictObject({
  name: DeploymentNameSchema,
  model: fields.model,
  replicas: fields.replicas,
  labelSelector: fields.labelSelector.default({}),
  pinnedDeviceIds: fields.pinnedDeviceIds.default([]),
  contextSize: fields.contextSize.default(null),
  parallel: fields.parallel.default(1),
  accelerator: fields.accelerator.default('any'),
});
export type DeploymentInputBody = z.input<typeof DeploymentInputSchema>;
export type DeploymentInput = z.output<typeof DeploymentInputSchema>;

/** `PATCH /api/v1/deployments/:ref` body: any fields but the name, at least one. */
export const DeploymentPatchSchema = z
  .strictObject({
    model: fields.model.optional(),
    replicas: fields.replicas.optional(),
    labelSelector: fields.labelSelector.optional(),
    pinnedDeviceIds: fields.pinnedDeviceIds.optional(),
    contextSize: fields.contextSize.optional(),
    parallel: fields.parallel.optional(),
    accelerator: fields.accelerator.optional(),
  })
  .refine((p) => Object.values(p).some((v) => v !== undefined), 'nothing to change');
export type DeploymentPatch = z.output<typeof DeploymentPatchSchema>;

/** `POST /api/v1/deployments/:ref/scale` body. */
export const DeploymentScaleSchema = z.strictObject({ replicas: fields.replicas });
/** `POST /api/v1/deployments/:ref/rollout` body. */
export const DeploymentRolloutSchema = z.strictObject({ model: fields.model });

/** `:ref` of `/api/v1/deployments/:ref`. */
export const DeploymentRefParamsSchema = z.object({ ref: z.string().min(1).describe('deployment id or name') });

/** Why a replica could not be placed on a device (counted per deployment in its status). */
export const UNPLACED_REASONS = [
  'offline',
  'reconnecting',
  'labels',
  'not-pinned',
  'no-accelerator',
  'no-hardware',
  'memory',
  'disk',
  'holds-model',
  'avoided',
] as const;
export const UnplacedReasonSchema = z.enum(UNPLACED_REASONS);
export type UnplacedReason = z.infer<typeof UnplacedReasonSchema>;

const count = z.int().min(0);

/** What the scheduler's last run made of a deployment. */
export const DeploymentStatusSchema = z.strictObject({
  wanted: count,
  /** replicas of the current model placed after this plan */
  placed: count,
  /** the devices holding them (sorted) */
  deviceIds: z.array(z.string()),
  /** of those, reported ready */
  ready: count,
  /** replicas of previous models still placed (a rollout in progress) */
  previous: count.describe('replicas of an earlier model still placed during a rollout'),
  /** true while replicas of an earlier model are still placed */
  rollingOut: z.boolean(),
  /** set when fewer than `wanted` replicas could be placed */
  unsatisfied: z
    .strictObject({
      missing: count,
      message: z.string(),
      /** devices ruled out, by reason */
      devices: z.partialRecord(UnplacedReasonSchema, count),
    })
    .optional(),
});
export type DeploymentStatus = z.infer<typeof DeploymentStatusSchema>;

/** One deployment's plan in a scheduler run: its status with what it is. */
export const DeploymentPlanSchema = DeploymentStatusSchema.extend({
  deploymentId: z.string().min(1),
  name: z.string().min(1),
  modelId: z.string().min(1),
});
export type DeploymentPlan = z.infer<typeof DeploymentPlanSchema>;

/** A deployment as the API answers it, with the scheduler's status (null before its first run sees it). */
export const DeploymentSchema = z.strictObject({
  id: z.string().min(1),
  name: DeploymentNameSchema,
  /** the catalog model's name */
  model: ModelNameSchema,
  modelId: z.string().min(1),
  replicas: fields.replicas,
  labelSelector: z.record(z.string(), z.string()),
  pinnedDeviceIds: z.array(z.string()),
  contextSize: z.int().nullable(),
  parallel: z.int().min(1),
  accelerator: AcceleratorNeedSchema,
  createdAt: IsoDateTimeSchema,
  updatedAt: IsoDateTimeSchema,
  status: DeploymentStatusSchema.nullable().describe("the scheduler's last run; null before it saw the deployment"),
});
export type DeploymentWithStatus = z.infer<typeof DeploymentSchema>;
/** A deployment without its status, as the service keeps it. */
export type DeploymentView = Omit<DeploymentWithStatus, 'status'>;

/** `GET /api/v1/deployments` answer. */
export const DeploymentPageSchema = pageOf(DeploymentSchema);

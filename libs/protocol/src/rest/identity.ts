import { z } from 'zod';
import { DetailsSchema } from '../schemas/common.js';

/**
 * REST contract of the identity routes (`/api/v1/auth/*`, `/api/v1/users`, `/api/v1/api-keys`,
 * `/api/v1/enrollment-tokens`, `/api/v1/audit`): request bodies and queries as the control plane parses them, responses
 * as they travel (instants as ISO 8601 strings). The enrollment exchange itself is in `enroll.ts` [P-5.1].
 */

/** An instant in a response: ISO 8601 in UTC, as `Date.toISOString()` writes it. */
const Instant = z.iso.datetime();

/** Roles of users and admin-scoped API keys, most to least. */
export const ROLES = ['admin', 'operator', 'viewer'] as const;
export const RoleSchema = z.enum(ROLES);
export type Role = z.infer<typeof RoleSchema>;

const PasswordSchema = z.string().min(12, 'passwords have at least 12 characters').max(1024);

/** Labels a device carries (and an enrollment token gives the devices it enrolls). */
export const DeviceLabelsSchema = z
  .record(z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$/, 'label keys are 1-63 letters, digits, ".", "_", "/", "-"'), z.string().max(128))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');
export type DeviceLabels = z.infer<typeof DeviceLabelsSchema>;

/** `{ id }` of `/users/:id` and `/api-keys/:id/...`. */
export const IdentityIdParamsSchema = z.object({ id: z.string().min(1).max(64).describe('user or API key id') });

// --- auth ----------------------------------------------------------------------------------------------------------

/** `POST /api/v1/auth/login` body. */
export const LoginRequestSchema = z.strictObject({
  email: z.string().trim().min(3).max(320),
  password: z.string().min(1).max(1024),
});
export type LoginRequest = z.infer<typeof LoginRequestSchema>;

/** `POST /api/v1/auth/login` answer: a bearer session token (shown once) and who it belongs to. */
export const LoginResponseSchema = z.object({
  token: z.string().min(1),
  expiresAt: Instant,
  user: z.object({ id: z.string(), email: z.string(), role: RoleSchema }),
});
export type LoginResponse = z.infer<typeof LoginResponseSchema>;

/** `GET /api/v1/auth/me`: the caller as the API sees it. */
export const PrincipalSchema = z.object({
  /** who the audit log names: `user:<id>` or `api-key:<id>` */
  actor: z.string().regex(/^(user|api-key):.+$/, 'expected user:<id> or api-key:<id>'),
  role: RoleSchema,
  /** the user, or the user who created the API key (null when that is unknown) */
  userId: z.string().nullable(),
});
export type PrincipalView = z.infer<typeof PrincipalSchema>;

// --- users ---------------------------------------------------------------------------------------------------------

/** `POST /api/v1/users` body. */
export const CreateUserRequestSchema = z.strictObject({
  email: z.email({ error: 'expected an e-mail address' }).max(320),
  password: PasswordSchema,
  role: RoleSchema,
});
export type CreateUserRequest = z.infer<typeof CreateUserRequestSchema>;

/** `PATCH /api/v1/users/:id` body: at least one field. */
export const UpdateUserRequestSchema = z
  .strictObject({
    role: RoleSchema.optional(),
    password: PasswordSchema.optional(),
    disabled: z.boolean().optional(),
  })
  .refine((v) => Object.values(v).some((x) => x !== undefined), 'nothing to change');
export type UpdateUserRequest = z.infer<typeof UpdateUserRequestSchema>;

/** A user as the API shows it (never a hash). */
export const UserSchema = z.object({
  id: z.string(),
  email: z.string(),
  role: RoleSchema,
  createdAt: Instant,
  lastLoginAt: Instant.nullable(),
  disabled: z.boolean(),
});
export type UserView = z.infer<typeof UserSchema>;

/** `GET /api/v1/users`. */
export const UserListSchema = z.object({ items: z.array(UserSchema) });
export type UserList = z.infer<typeof UserListSchema>;

// --- API keys ------------------------------------------------------------------------------------------------------

const apiKeyName = z.string().trim().min(1).max(100);

/** `POST /api/v1/api-keys` body: an admin-scoped key with a role, or a gateway key (allow-list, rate limit). */
export const CreateApiKeyRequestSchema = z.discriminatedUnion('scope', [
  z.strictObject({
    scope: z.literal('admin'),
    name: apiKeyName,
    role: RoleSchema,
    expiresAt: z.iso.datetime().optional(),
  }),
  z.strictObject({
    scope: z.literal('gateway'),
    name: apiKeyName,
    modelAllowList: z.array(z.string().min(1).max(128)).max(100).default([]),
    rateLimitPerMinute: z.number().int().min(1).max(1_000_000).nullable().default(null),
    expiresAt: z.iso.datetime().optional(),
  }),
]);
export type CreateApiKeyRequest = z.input<typeof CreateApiKeyRequestSchema>;

/** An API key as the API shows it: its prefix, never the secret or its hash. */
export const ApiKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  /** the non-secret start of the key */
  prefix: z.string(),
  scope: z.enum(['admin', 'gateway']),
  /** admin-scoped keys only */
  role: RoleSchema.nullable(),
  /** gateway keys: the models it may use (empty: all) */
  modelAllowList: z.array(z.string()),
  rateLimitPerMinute: z.int().min(1).nullable(),
  createdAt: Instant,
  expiresAt: Instant.nullable(),
  revokedAt: Instant.nullable(),
  lastUsedAt: Instant.nullable(),
});
export type ApiKeyView = z.infer<typeof ApiKeySchema>;

/** `POST /api/v1/api-keys` answer: the key with its secret, shown this once. */
export const CreatedApiKeySchema = ApiKeySchema.extend({ key: z.string().min(1) });
export type CreatedApiKey = z.infer<typeof CreatedApiKeySchema>;

/** `GET /api/v1/api-keys`. */
export const ApiKeyListSchema = z.object({ items: z.array(ApiKeySchema) });
export type ApiKeyList = z.infer<typeof ApiKeyListSchema>;

// --- enrollment tokens ---------------------------------------------------------------------------------------------

/** `POST /api/v1/enrollment-tokens` body: labels the enrolled devices get, how many may enrol, for how long. */
export const CreateEnrollmentTokenRequestSchema = z.strictObject({
  labels: DeviceLabelsSchema.default({}),
  uses: z.number().int().min(1).max(10_000).default(1),
  ttlSeconds: z.number().int().min(60).max(365 * 24 * 3600).default(24 * 3600),
  note: z.string().max(200).optional(),
});
export type CreateEnrollmentTokenRequest = z.input<typeof CreateEnrollmentTokenRequestSchema>;

/** `POST /api/v1/enrollment-tokens` answer: the token, shown once (only its hash is stored). */
export const CreatedEnrollmentTokenSchema = z.object({
  id: z.string(),
  token: z.string().min(1),
  prefix: z.string(),
  expiresAt: Instant,
  remainingUses: z.int().min(0),
  labels: z.record(z.string(), z.string()),
});
export type CreatedEnrollmentToken = z.infer<typeof CreatedEnrollmentTokenSchema>;

// --- audit ---------------------------------------------------------------------------------------------------------

/** `GET /api/v1/audit` query. */
export const AuditQuerySchema = z.object({
  actor: z.string().max(200).optional().describe('e.g. user:<id>, api-key:<id>, device:<id>, system'),
  action: z.string().max(100).optional().describe('exact action, or a prefix ending in "." (e.g. "device.")'),
  target: z.string().max(200).optional(),
  since: z.iso.datetime({ offset: true }).optional().describe('only events at or after this instant'),
  until: z.iso.datetime({ offset: true }).optional().describe('only events before this instant'),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(64).optional().describe('nextCursor of the previous page'),
});
export type AuditQuery = z.input<typeof AuditQuerySchema>;

/** One audit event: who did what to which target, when. */
export const AuditEventSchema = z.object({
  id: z.string(),
  at: Instant,
  /** `user:<id>`, `api-key:<id>`, `device:<id>` or `system` */
  actor: z.string(),
  /** e.g. `device.revoke`, `user.create` */
  action: z.string(),
  /** e.g. `device:<id>` */
  target: z.string().nullable(),
  /** what changed; its fields depend on the action (never secrets) */
  details: DetailsSchema,
});
export type AuditEventView = z.infer<typeof AuditEventSchema>;

/** `GET /api/v1/audit`: a page, newest first. */
export const AuditPageSchema = z.object({ items: z.array(AuditEventSchema), nextCursor: z.string().nullable() });
export type AuditPage = z.infer<typeof AuditPageSchema>;

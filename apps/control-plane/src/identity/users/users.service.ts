import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode } from '@flotilla/protocol';
import { z } from 'zod';
import { DATABASE } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../audit/audit.service.js';
import type { Role } from '../auth/principal.js';
import { generateSecret, hashPassword, hashSecret, secretPrefix } from '../auth/secrets.js';
import { AppError, notFound } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import type { ApiKey, User } from '../../generated/prisma/client.js';

export const ROLES = ['admin', 'operator', 'viewer'] as const satisfies readonly Role[];

export const CreateUserSchema = z.strictObject({
  email: z.email({ error: 'expected an e-mail address' }).max(320),
  password: z.string().min(12, 'passwords have at least 12 characters').max(1024),
  role: z.enum(ROLES),
});
export const UpdateUserSchema = z
  .strictObject({
    role: z.enum(ROLES).optional(),
    password: z.string().min(12, 'passwords have at least 12 characters').max(1024).optional(),
    disabled: z.boolean().optional(),
  })
  .refine((v) => Object.values(v).some((x) => x !== undefined), 'nothing to change');

export const CreateApiKeySchema = z.discriminatedUnion('scope', [
  z.strictObject({
    scope: z.literal('admin'),
    name: z.string().trim().min(1).max(100),
    role: z.enum(ROLES),
    expiresAt: z.iso.datetime().optional(),
  }),
  z.strictObject({
    scope: z.literal('gateway'),
    name: z.string().trim().min(1).max(100),
    modelAllowList: z.array(z.string().min(1).max(128)).max(100).default([]),
    rateLimitPerMinute: z.number().int().min(1).max(1_000_000).nullable().default(null),
    expiresAt: z.iso.datetime().optional(),
  }),
]);

export interface UserView {
  id: string;
  email: string;
  role: Role;
  createdAt: Date;
  lastLoginAt: Date | null;
  disabled: boolean;
}

export interface ApiKeyView {
  id: string;
  name: string;
  /** the non-secret start of the key */
  prefix: string;
  scope: 'admin' | 'gateway';
  role: Role | null;
  modelAllowList: string[];
  rateLimitPerMinute: number | null;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

const userView = (u: User): UserView => ({
  id: u.id,
  email: u.email,
  role: u.role,
  createdAt: u.createdAt,
  lastLoginAt: u.lastLoginAt,
  disabled: u.disabledAt !== null,
});

const keyView = (k: ApiKey): ApiKeyView => ({
  id: k.id,
  name: k.name,
  prefix: k.prefix,
  scope: k.scope,
  role: k.role,
  modelAllowList: k.modelAllowList,
  rateLimitPerMinute: k.rateLimitPerMinute,
  createdAt: k.createdAt,
  expiresAt: k.expiresAt,
  revokedAt: k.revokedAt,
  lastUsedAt: k.lastUsedAt,
});

function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'P2002';
}

/** Admin users and API keys: hashes stay inside; a new key's secret is returned once. */
@Injectable()
export class UsersService {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly audit: AuditService,
  ) {}

  async listUsers(): Promise<UserView[]> {
    return (await this.db.prisma.user.findMany({ orderBy: { createdAt: 'asc' } })).map(userView);
  }

  async createUser(input: z.output<typeof CreateUserSchema>, actor: Actor): Promise<UserView> {
    const passwordHash = await hashPassword(input.password);
    try {
      return await this.db.prisma.$transaction(async (tx) => {
        const user = await tx.user.create({ data: { email: input.email.toLowerCase(), passwordHash, role: input.role } });
        await this.audit.record(actor, 'user.create', `user:${user.id}`, { email: user.email, role: user.role }, tx);
        return userView(user);
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw new AppError(ErrorCode.CONFLICT, `a user with e-mail ${input.email} already exists`);
      throw error;
    }
  }

  async updateUser(id: string, input: z.output<typeof UpdateUserSchema>, actor: Actor): Promise<UserView> {
    const passwordHash = input.password ? await hashPassword(input.password) : undefined;
    return this.db.prisma.$transaction(async (tx) => {
      const current = await tx.user.findUnique({ where: { id } });
      if (!current) throw notFound(`user ${id}`);
      const demotesOrDisables = (input.role && input.role !== 'admin') || input.disabled === true;
      if (current.role === 'admin' && demotesOrDisables) {
        const otherAdmins = await tx.user.count({ where: { role: 'admin', disabledAt: null, id: { not: id } } });
        if (otherAdmins === 0) throw new AppError(ErrorCode.CONFLICT, 'the last active admin cannot be demoted or disabled');
      }
      const user = await tx.user.update({
        where: { id },
        data: {
          ...(input.role ? { role: input.role } : {}),
          ...(passwordHash ? { passwordHash } : {}),
          ...(input.disabled === undefined ? {} : { disabledAt: input.disabled ? new Date() : null }),
        },
      });
      // A changed password or a disabled account ends the user's sessions.
      if (passwordHash || input.disabled) await tx.session.deleteMany({ where: { userId: id } });
      await this.audit.record(
        actor,
        'user.update',
        `user:${id}`,
        { ...(input.role ? { role: input.role } : {}), ...(passwordHash ? { passwordChanged: true } : {}), ...(input.disabled === undefined ? {} : { disabled: input.disabled }) },
        tx,
      );
      return userView(user);
    });
  }

  async listApiKeys(): Promise<ApiKeyView[]> {
    return (await this.db.prisma.apiKey.findMany({ orderBy: { createdAt: 'asc' } })).map(keyView);
  }

  async createApiKey(input: z.output<typeof CreateApiKeySchema>, actor: Actor, userId: string | null): Promise<ApiKeyView & { key: string }> {
    const key = generateSecret('apiKey');
    const row = await this.db.prisma.$transaction(async (tx) => {
      const created = await tx.apiKey.create({
        data: {
          name: input.name,
          prefix: secretPrefix(key),
          keyHash: hashSecret(key),
          scope: input.scope,
          role: input.scope === 'admin' ? input.role : null,
          modelAllowList: input.scope === 'gateway' ? input.modelAllowList : [],
          rateLimitPerMinute: input.scope === 'gateway' ? input.rateLimitPerMinute : null,
          expiresAt: input.expiresAt ? new Date(input.expiresAt) : null,
          createdById: userId,
        },
      });
      await this.audit.record(actor, 'api-key.create', `api-key:${created.id}`, { name: created.name, scope: created.scope, role: created.role }, tx);
      return created;
    });
    return { ...keyView(row), key };
  }

  async revokeApiKey(id: string, actor: Actor): Promise<ApiKeyView> {
    return this.db.prisma.$transaction(async (tx) => {
      const current = await tx.apiKey.findUnique({ where: { id } });
      if (!current) throw notFound(`API key ${id}`);
      const row = current.revokedAt ? current : await tx.apiKey.update({ where: { id }, data: { revokedAt: new Date() } });
      await this.audit.record(actor, 'api-key.revoke', `api-key:${id}`, { name: row.name }, tx);
      return keyView(row);
    });
  }
}

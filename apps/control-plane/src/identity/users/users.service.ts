import { Inject, Injectable } from '@nestjs/common';
import {
  type ApiKeyView,
  type CreateApiKeyRequestSchema,
  type CreateUserRequestSchema,
  type CreatedApiKey,
  ErrorCode,
  type UpdateUserRequestSchema,
  type UserView,
} from '@flotilla/protocol';
import type { z } from 'zod';
import { DATABASE } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { generateSecret, hashPassword, hashSecret, secretPrefix } from '../auth/secrets.js';
import { AppError, notFound } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import type { ApiKey, User } from '../../generated/prisma/client.js';

const userView = (u: User): UserView => ({
  id: u.id,
  email: u.email,
  role: u.role,
  createdAt: u.createdAt.toISOString(),
  lastLoginAt: u.lastLoginAt?.toISOString() ?? null,
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
  createdAt: k.createdAt.toISOString(),
  expiresAt: k.expiresAt?.toISOString() ?? null,
  revokedAt: k.revokedAt?.toISOString() ?? null,
  lastUsedAt: k.lastUsedAt?.toISOString() ?? null,
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

  async createUser(input: z.output<typeof CreateUserRequestSchema>, actor: Actor): Promise<UserView> {
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

  async updateUser(id: string, input: z.output<typeof UpdateUserRequestSchema>, actor: Actor): Promise<UserView> {
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

  async createApiKey(input: z.output<typeof CreateApiKeyRequestSchema>, actor: Actor, userId: string | null): Promise<CreatedApiKey> {
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

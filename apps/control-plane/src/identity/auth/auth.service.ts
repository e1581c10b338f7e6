import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode, type LoginResponse } from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import { AppError, unauthorized } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import type { Principal } from './principal.js';
import {
  SECRET_PREFIX,
  generatePassword,
  generateSecret,
  hashPassword,
  hashSecret,
  secretMatches,
  secretPrefix,
  verifyPassword,
} from './secrets.js';

export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;

@Injectable()
export class AuthService {
  constructor(@Inject(DATABASE) private readonly db: Database) {}

  async login(email: string, password: string): Promise<LoginResponse> {
    const user = await this.db.prisma.user.findUnique({ where: { email: email.toLowerCase() } });
    // Verify against a real hash even for unknown users, so timing does not reveal which e-mails exist.
    const ok = await verifyPassword(password, user?.passwordHash ?? (await dummyHash()));
    if (!user || !ok || user.disabledAt) throw new AppError(ErrorCode.UNAUTHORIZED, 'wrong e-mail or password');
    const token = generateSecret('session');
    const expiresAt = new Date(Date.now() + SESSION_TTL_MS);
    await this.db.prisma.$transaction([
      this.db.prisma.session.create({ data: { userId: user.id, tokenHash: hashSecret(token), expiresAt } }),
      this.db.prisma.user.update({ where: { id: user.id }, data: { lastLoginAt: new Date() } }),
    ]);
    return { token, expiresAt: expiresAt.toISOString(), user: { id: user.id, email: user.email, role: user.role } };
  }

  async logout(token: string): Promise<void> {
    await this.db.prisma.session.deleteMany({ where: { tokenHash: hashSecret(token) } });
  }

  /** Resolves a bearer credential (session token or admin-scoped API key) to a principal. */
  async authenticate(bearer: string | undefined): Promise<Principal> {
    if (!bearer) throw unauthorized();
    if (bearer.startsWith(SECRET_PREFIX.session)) {
      const session = await this.db.prisma.session.findUnique({
        where: { tokenHash: hashSecret(bearer) },
        include: { user: true },
      });
      if (!session || session.expiresAt < new Date() || session.user.disabledAt) throw unauthorized('session expired or unknown');
      return { actor: `user:${session.userId}`, role: session.user.role, userId: session.userId };
    }
    if (bearer.startsWith(SECRET_PREFIX.apiKey)) {
      const key = await this.db.prisma.apiKey.findUnique({ where: { prefix: secretPrefix(bearer) } });
      if (!key || !secretMatches(bearer, key.keyHash) || key.revokedAt || (key.expiresAt && key.expiresAt < new Date())) {
        throw unauthorized('unknown or revoked API key');
      }
      if (key.scope !== 'admin' || !key.role) throw new AppError(ErrorCode.FORBIDDEN, 'this API key is for the gateway only');
      return { actor: `api-key:${key.id}`, role: key.role, userId: key.createdById };
    }
    throw unauthorized('unrecognised credential');
  }
}

// A hash of a password nobody knows, so unknown e-mails cost the same time as wrong passwords.
let dummy: Promise<string> | undefined;
function dummyHash(): Promise<string> {
  dummy ??= hashPassword(generatePassword());
  return dummy;
}

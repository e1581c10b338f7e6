import { type CanActivate, type ExecutionContext, Injectable, SetMetadata } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { FastifyRequest } from 'fastify';
import { forbidden } from '../../platform/common/app-error.js';
import { AuthService } from './auth.service.js';
import { roleAtLeast, type Principal, type Role } from './principal.js';

const REQUIRED_ROLE = 'flotilla.requiredRole';
const PUBLIC = 'flotilla.public';

/** The least role a route needs; routes without it need `admin`. */
export const RequireRole = (role: Role) => SetMetadata(REQUIRED_ROLE, role);
/** A route anyone may call (health, login, enrollment with its own token). */
export const Public = () => SetMetadata(PUBLIC, true);

export type AuthedRequest = FastifyRequest & { principal?: Principal };

export function bearerOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  return match?.[1];
}

/** Deny by default: every route needs a principal with at least the declared role. */
@Injectable()
export class AuthGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly auth: AuthService,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const targets = [context.getHandler(), context.getClass()];
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC, targets)) return true;
    const request = context.switchToHttp().getRequest<AuthedRequest>();
    const principal = await this.auth.authenticate(bearerOf(request));
    const required = this.reflector.getAllAndOverride<Role>(REQUIRED_ROLE, targets) ?? 'admin';
    if (!roleAtLeast(principal.role, required)) throw forbidden(`this needs the ${required} role`);
    request.principal = principal;
    return true;
  }
}

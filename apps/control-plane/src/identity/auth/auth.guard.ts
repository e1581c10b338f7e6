import { type CanActivate, type ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { FastifyRequest } from 'fastify';
import { forbidden } from '../../platform/common/app-error.js';
import { AuthService } from './auth.service.js';
import { PUBLIC_KEY, REQUIRED_ROLE_KEY } from '../../platform/common/route-access.js';
import { roleAtLeast, type Principal, type Role } from './principal.js';

// The markers are platform's (platform controllers use them too); re-exported for the domains' controllers.
export { Public, RequireRole } from '../../platform/common/route-access.js';

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
    if (this.reflector.getAllAndOverride<boolean>(PUBLIC_KEY, targets)) return true;
    const request = context.switchToHttp().getRequest<AuthedRequest>();
    const principal = await this.auth.authenticate(bearerOf(request));
    const required = this.reflector.getAllAndOverride<Role>(REQUIRED_ROLE_KEY, targets) ?? 'admin';
    if (!roleAtLeast(principal.role, required)) throw forbidden(`this needs the ${required} role`);
    request.principal = principal;
    return true;
  }
}

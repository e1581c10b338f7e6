import { Body, Controller, Get, HttpCode, Post, Req } from '@nestjs/common';
import { z } from 'zod';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { LoginThrottle } from '../../platform/rate-limit/login-throttle.js';
import { RateLimitService } from '../../platform/rate-limit/rate-limit.service.js';
import { type AuthedRequest, Public, RequireRole, bearerOf } from './auth.guard.js';
import { AuthService, type LoginResult } from './auth.service.js';
import type { Principal } from './principal.js';

const loginBody = z.strictObject({
  email: z.string().trim().min(3).max(320),
  password: z.string().min(1).max(1024),
});

@Controller('api/v1/auth')
export class AuthController {
  constructor(
    private readonly auth: AuthService,
    private readonly rateLimits: RateLimitService,
    private readonly loginThrottle: LoginThrottle,
  ) {}

  @Public()
  @Post('login')
  @HttpCode(200)
  @ApiDoc({ summary: 'Log in with e-mail and password; returns a bearer session token', tags: ['auth'], body: loginBody, errors: [429] })
  async login(@Body() body: unknown, @Req() request: AuthedRequest): Promise<LoginResult> {
    const { email, password } = parseInput(loginBody, body);
    // Attempts per address (any account) are refused past their limit; failures per (address, account) are refused,
    // failures per account only slowed, so an attacker elsewhere cannot lock the owner out (see LoginThrottle).
    await this.rateLimits.enforce([['login-ip', request.ip]]);
    return this.loginThrottle.attempt(request.ip, email.toLowerCase(), () => this.auth.login(email, password));
  }

  @RequireRole('viewer')
  @Post('logout')
  @HttpCode(204)
  async logout(@Req() request: AuthedRequest): Promise<void> {
    const token = bearerOf(request);
    if (token) await this.auth.logout(token);
  }

  @RequireRole('viewer')
  @Get('me')
  me(@Req() request: AuthedRequest): Principal | undefined {
    return request.principal;
  }
}

import { Body, Controller, Get, HttpCode, Post, Req } from '@nestjs/common';
import { type LoginResponse, LoginRequestSchema, LoginResponseSchema, type PrincipalView, PrincipalSchema } from '@flotilla/protocol';
import { parseInput } from '../../platform/common/parse.js';
import { unauthorized } from '../../platform/common/app-error.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { LoginThrottle } from '../../platform/rate-limit/login-throttle.js';
import { RateLimitService } from '../../platform/rate-limit/rate-limit.service.js';
import { type AuthedRequest, Public, RequireRole, bearerOf } from './auth.guard.js';
import { AuthService } from './auth.service.js';

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
  @ApiDoc({
    summary: 'Log in with e-mail and password; returns a bearer session token',
    tags: ['auth'],
    body: LoginRequestSchema,
    response: LoginResponseSchema,
    errors: [401, 429],
  })
  async login(@Body() body: unknown, @Req() request: AuthedRequest): Promise<LoginResponse> {
    const { email, password } = parseInput(LoginRequestSchema, body);
    // Attempts per address (any account) are refused past their limit; failures per (address, account) are refused,
    // failures per account only slowed, so an attacker elsewhere cannot lock the owner out (see LoginThrottle).
    await this.rateLimits.enforce([['login-ip', request.ip]]);
    return this.loginThrottle.attempt(request.ip, email.toLowerCase(), () => this.auth.login(email, password));
  }

  /** Ends the session of the bearer token (an API key is not a session: nothing to end). */
  @RequireRole('viewer')
  @Post('logout')
  @HttpCode(204)
  @ApiDoc({ summary: 'End the current session', tags: ['auth'] })
  async logout(@Req() request: AuthedRequest): Promise<void> {
    const token = bearerOf(request);
    if (token) await this.auth.logout(token);
  }

  @RequireRole('viewer')
  @Get('me')
  @ApiDoc({ summary: 'Who the caller is: actor, role and user', tags: ['auth'], response: PrincipalSchema })
  me(@Req() request: AuthedRequest): PrincipalView {
    if (!request.principal) throw unauthorized();
    return request.principal;
  }
}

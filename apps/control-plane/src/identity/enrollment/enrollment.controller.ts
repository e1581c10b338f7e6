import { Body, Controller, Post, Req } from '@nestjs/common';
import {
  ErrorCode,
  CreateEnrollmentTokenRequestSchema,
  type CreatedEnrollmentToken,
  CreatedEnrollmentTokenSchema,
  EnrollRequestSchema,
  EnrollResponseSchema,
  type EnrollResponse,
} from '@flotilla/protocol';
import { type AuthedRequest, Public, RequireRole } from '../auth/auth.guard.js';
import { hashSecret } from '../auth/secrets.js';
import { AppError, unauthorized } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { RateLimitService } from '../../platform/rate-limit/rate-limit.service.js';
import { EnrollmentService } from './enrollment.service.js';

@Controller('api/v1')
export class EnrollmentController {
  constructor(
    private readonly enrollment: EnrollmentService,
    private readonly rateLimits: RateLimitService,
  ) {}

  @RequireRole('operator')
  @Post('enrollment-tokens')
  @ApiDoc({
    summary: 'Mint a bootstrap token for enrolling devices (with the labels they get); the token is shown once',
    tags: ['enrollment'],
    body: CreateEnrollmentTokenRequestSchema,
    response: CreatedEnrollmentTokenSchema,
  })
  createToken(@Body() body: unknown, @Req() request: AuthedRequest): Promise<CreatedEnrollmentToken> {
    const principal = request.principal;
    if (!principal) throw unauthorized();
    return this.enrollment.createToken(parseInput(CreateEnrollmentTokenRequestSchema, body), principal.actor, principal.userId);
  }

  /** The agent's first call, authenticated by the bootstrap token in the body. [P-5.1] */
  @Public()
  @Post('enroll')
  @ApiDoc({ summary: 'Exchange a bootstrap token for device credentials', tags: ['enrollment'], body: EnrollRequestSchema, response: EnrollResponseSchema, errors: [401, 429] })
  async enroll(@Body() body: unknown, @Req() request: AuthedRequest): Promise<EnrollResponse> {
    const input = parseInput(EnrollRequestSchema, body);
    // Only failed enrollments count (per address, and per token value, keyed by its hash so the bucket map never holds
    // a usable token): a rollout of thousands of devices with one token, many behind one address, is never refused,
    // while guessing, or a fleet retrying a dead token, is stopped once its failure budget is spent.
    const buckets = [
      ['enroll-ip', request.ip],
      ['enroll-token', hashSecret(input.token)],
    ] as const;
    await this.rateLimits.refuseIfSpent(buckets, 'too many failed enrollments');
    try {
      return await this.enrollment.enroll(input);
    } catch (error) {
      if (error instanceof AppError && error.code === ErrorCode.ENROLLMENT_TOKEN_INVALID) await this.rateLimits.charge(buckets);
      throw error;
    }
  }
}

import { Body, Controller, Post, Req } from '@nestjs/common';
import { EnrollRequestSchema, EnrollResponseSchema, type EnrollResponse } from '@flotilla/protocol';
import { z } from 'zod';
import { type AuthedRequest, Public, RequireRole } from '../auth/auth.guard.js';
import { hashSecret } from '../auth/secrets.js';
import { unauthorized } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { RateLimitService } from '../../platform/rate-limit/rate-limit.service.js';
import { type CreatedEnrollmentToken, EnrollmentService } from './enrollment.service.js';

const labelsSchema = z
  .record(z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$/, 'label keys are 1-63 letters, digits, ".", "_", "/", "-"'), z.string().max(128))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

const createTokenBody = z.strictObject({
  labels: labelsSchema.default({}),
  uses: z.number().int().min(1).max(10_000).default(1),
  ttlSeconds: z.number().int().min(60).max(365 * 24 * 3600).default(24 * 3600),
  note: z.string().max(200).optional(),
});

@Controller('api/v1')
export class EnrollmentController {
  constructor(
    private readonly enrollment: EnrollmentService,
    private readonly rateLimits: RateLimitService,
  ) {}

  @RequireRole('operator')
  @Post('enrollment-tokens')
  createToken(@Body() body: unknown, @Req() request: AuthedRequest): Promise<CreatedEnrollmentToken> {
    const principal = request.principal;
    if (!principal) throw unauthorized();
    return this.enrollment.createToken(parseInput(createTokenBody, body), principal.actor, principal.userId);
  }

  /** The agent's first call, authenticated by the bootstrap token in the body. [P-5.1] */
  @Public()
  @Post('enroll')
  @ApiDoc({ summary: 'Exchange a bootstrap token for device credentials', tags: ['enrollment'], body: EnrollRequestSchema, response: EnrollResponseSchema, errors: [429] })
  async enroll(@Body() body: unknown, @Req() request: AuthedRequest): Promise<EnrollResponse> {
    const input = parseInput(EnrollRequestSchema, body);
    // Keyed by the token's hash: the bucket map never holds a usable token.
    await this.rateLimits.enforce([
      ['enroll-ip', request.ip],
      ['enroll-token', hashSecret(input.token)],
    ]);
    return this.enrollment.enroll(input);
  }
}

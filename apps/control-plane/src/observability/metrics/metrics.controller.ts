import { Controller, Get, Inject, Req, Res } from '@nestjs/common';
import { MetricsTextSchema } from '@flotilla/protocol';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { LOGGER } from '../../platform/tokens.js';
import { Public, bearerOf } from '../../identity/auth/auth.guard.js';
import { secretMatches, hashSecret } from '../../identity/auth/secrets.js';
import { unauthorized } from '../../platform/common/app-error.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from '../../platform/metrics/metrics-registry.js';
import { METRICS_SETTINGS, type MetricsSettings } from './metrics.settings.js';

@Controller()
export class MetricsController {
  private readonly tokenHash: string | undefined;

  constructor(
    private readonly registry: MetricsRegistry,
    @Inject(METRICS_SETTINGS) settings: MetricsSettings,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {
    this.tokenHash = settings.token ? hashSecret(settings.token) : undefined;
  }

  /** Public unless FLOTILLA_METRICS_TOKEN is set (see metrics.settings.ts). */
  @Public()
  @Get('metrics')
  @ApiDoc({ summary: 'Prometheus metrics (text format 0.0.4)', tags: ['observability'], produces: 'text/plain', response: MetricsTextSchema, auth: 'metrics-token' })
  async metrics(@Req() request: FastifyRequest, @Res({ passthrough: true }) reply: FastifyReply): Promise<string> {
    if (this.tokenHash) {
      const bearer = bearerOf(request);
      // Compare hashes in constant time so the token cannot be guessed byte by byte.
      if (!bearer || !secretMatches(bearer, this.tokenHash)) throw unauthorized('a metrics token is required (FLOTILLA_METRICS_TOKEN)');
    }
    const text = await this.registry.render((name, error) => this.logger.warn({ metric: name, err: error }, 'metrics collector failed'));
    // Set here, not with @Header: an error answer must stay JSON.
    void reply.header('content-type', PROMETHEUS_CONTENT_TYPE).header('cache-control', 'no-store');
    return text;
  }
}

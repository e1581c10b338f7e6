import { Controller, Get, Header, Inject, Req } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { LOGGER } from '../app/tokens.js';
import { Public, bearerOf } from '../auth/auth.guard.js';
import { secretMatches, hashSecret } from '../auth/secrets.js';
import { unauthorized } from '../common/app-error.js';
import { ApiDoc } from '../openapi/api-doc.js';
import { MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from './metrics-registry.js';
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
  @Header('content-type', PROMETHEUS_CONTENT_TYPE)
  @Header('cache-control', 'no-store')
  @ApiDoc({ summary: 'Prometheus metrics (text format 0.0.4)', tags: ['observability'], produces: 'text/plain', auth: 'metrics-token' })
  metrics(@Req() request: FastifyRequest): Promise<string> {
    if (this.tokenHash) {
      const bearer = bearerOf(request);
      // Compare hashes in constant time so the token cannot be guessed byte by byte.
      if (!bearer || !secretMatches(bearer, this.tokenHash)) throw unauthorized('a metrics token is required (FLOTILLA_METRICS_TOKEN)');
    }
    return this.registry.render((name, error) => this.logger.warn({ metric: name, err: error }, 'metrics collector failed'));
  }
}

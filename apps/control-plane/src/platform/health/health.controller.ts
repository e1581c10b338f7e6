import { Controller, Get, HttpCode, HttpException, HttpStatus, Inject } from '@nestjs/common';
import { LivenessSchema, ReadinessReportSchema, type Liveness, type ReadinessReport } from '@flotilla/protocol';
import { READINESS_CHECKS } from '../tokens.js';
import { ApiDoc } from '../openapi/api-doc.js';
import { Public } from '../common/route-access.js';

export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
}

export type { ReadinessReport };

@Public()
@Controller()
export class HealthController {
  constructor(@Inject(READINESS_CHECKS) private readonly checks: ReadinessCheck[]) {}

  /** Liveness: the process answers. */
  @Get('healthz')
  @HttpCode(200)
  @ApiDoc({ summary: 'Liveness: the process answers', tags: ['health'], response: LivenessSchema })
  healthz(): Liveness {
    return { status: 'ok' };
  }

  /** Readiness: every dependency answers (database, broker). */
  @Get('readyz')
  @ApiDoc({
    summary: 'Readiness: every dependency (database, broker) answers; 503 with the same body when one does not',
    tags: ['health'],
    response: ReadinessReportSchema,
    errors: [503],
  })
  async readyz(): Promise<ReadinessReport> {
    const entries = await Promise.all(
      this.checks.map(async (c) => {
        try {
          await c.check();
          return [c.name, { ok: true }] as const;
        } catch (error) {
          return [c.name, { ok: false, error: error instanceof Error ? error.message : String(error) }] as const;
        }
      }),
    );
    const report: ReadinessReport = {
      status: entries.every(([, r]) => r.ok) ? 'ready' : 'not-ready',
      checks: Object.fromEntries<{ ok: boolean; error?: string }>(entries),
    };
    if (report.status !== 'ready') throw new HttpException(report, HttpStatus.SERVICE_UNAVAILABLE);
    return report;
  }
}

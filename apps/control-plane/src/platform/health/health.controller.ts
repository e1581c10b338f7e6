import { Controller, Get, HttpCode, HttpException, HttpStatus, Inject } from '@nestjs/common';
import { READINESS_CHECKS } from '../tokens.js';
import { Public } from '../common/route-access.js';

export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
}

export interface ReadinessReport {
  status: 'ready' | 'not-ready';
  checks: Record<string, { ok: boolean; error?: string }>;
}

@Public()
@Controller()
export class HealthController {
  constructor(@Inject(READINESS_CHECKS) private readonly checks: ReadinessCheck[]) {}

  /** Liveness: the process answers. */
  @Get('healthz')
  @HttpCode(200)
  healthz(): { status: 'ok' } {
    return { status: 'ok' };
  }

  /** Readiness: every dependency answers (database, broker). */
  @Get('readyz')
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

import { Controller, Get, Query } from '@nestjs/common';
import { RequireRole } from '../../platform/common/route-access.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { UsageQuerySchema, UsageSchema, type Usage } from '@flotilla/protocol';
import { UsageService } from './usage.service.js';

/** `/api/v1/usage`: read from the request records the gateway writes (moved out of the gateway controller). */
@Controller()
export class UsageController {
  constructor(private readonly usageService: UsageService) {}

  /** Per-model and per-device usage over a window, from the recorded requests or, past their retention, the rollups. */
  @RequireRole('viewer')
  @Get('api/v1/usage')
  @ApiDoc({
    summary:
      'Gateway usage per model and per device over a window (?window=15m, 1h, 24h, 7d, 30d; latency over successful requests). Windows longer than FLOTILLA_REQUEST_RETENTION_DAYS are read from hourly rollups: start rounded down to the hour, percentiles within about 19 %',
    tags: ['gateway'],
    query: UsageQuerySchema,
    response: UsageSchema,
  })
  async usage(@Query() query: unknown): Promise<Usage> {
    const { window } = parseInput(UsageQuerySchema, query);
    return this.usageService.usage(window);
  }
}

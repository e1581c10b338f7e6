import { Controller, Get } from '@nestjs/common';
import { FleetHealthSchema, RecommendationsSchema, type FleetHealthView, type Recommendations } from '@flotilla/protocol';
import { RequireRole } from '../../identity/auth/auth.guard.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { FleetHealthService } from './fleet-health.service.js';

// `/api/v1/fleet` belongs to the fleet file (models domain); fleet health and recommendations have paths of their own.
@Controller('api/v1')
export class FleetHealthController {
  constructor(private readonly health: FleetHealthService) {}

  @RequireRole('viewer')
  @Get('fleet-health')
  @ApiDoc({
    summary: 'Fleet health: healthy, degraded or unhealthy, with the reasons',
    description:
      'unhealthy: >= 50 % of devices offline, a deployment with no ready replica, or the fleet-wide error-rate alert open; ' +
      'degraded: any device offline, a deployment below its replicas, or any open alert; healthy otherwise.',
    tags: ['observability'],
    response: FleetHealthSchema,
  })
  fleetHealth(): Promise<FleetHealthView> {
    return this.health.assess();
  }

  @RequireRole('viewer')
  @Get('recommendations')
  @ApiDoc({ summary: 'Scaling recommendations (scale out, up, down) over the scaling window', tags: ['observability'], response: RecommendationsSchema })
  recommendations(): Promise<Recommendations> {
    return this.health.recommendations();
  }
}

import { Controller, Get } from '@nestjs/common';
import { z } from 'zod';
import { RequireRole } from '../../identity/auth/auth.guard.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { FleetHealthService, type RecommendationReport } from './fleet-health.service.js';
import type { FleetHealth } from './fleet-health.js';

const status = z.enum(['healthy', 'degraded', 'unhealthy']);

export const fleetHealthSchema = z.object({
  status,
  reasons: z.array(z.object({ rule: z.string(), status: status.exclude(['healthy']), message: z.string() })),
  devices: z.object({
    total: z.number(),
    online: z.number().describe('online and back on this control plane since it started'),
    reconnecting: z.number().describe('stored online/draining by an earlier control-plane process, not back yet (no hello, no live session)'),
    offline: z.number(),
    draining: z.number(),
    revoked: z.number(),
  }),
  deployments: z.object({ total: z.number(), belowDesired: z.number(), unavailable: z.number() }),
  alerts: z.object({ open: z.number(), critical: z.number(), warning: z.number() }),
  evaluatedAt: z.date(),
});

export const recommendationsSchema = z.object({
  windowSeconds: z.number(),
  generatedAt: z.date(),
  recommendations: z.array(
    z.object({
      kind: z.enum(['scale-out', 'scale-up', 'scale-down']),
      subject: z.string().describe('deployment:<name> or device:<id>'),
      deploymentId: z.string().optional(),
      deviceId: z.string().optional(),
      currentReplicas: z.number().optional(),
      suggestedReplicas: z.number().optional(),
      reason: z.string(),
      metrics: z.record(z.string(), z.number()),
    }),
  ),
});

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
    response: fleetHealthSchema,
  })
  fleetHealth(): Promise<FleetHealth & { evaluatedAt: Date }> {
    return this.health.assess();
  }

  @RequireRole('viewer')
  @Get('recommendations')
  @ApiDoc({ summary: 'Scaling recommendations (scale out, up, down) over the scaling window', tags: ['observability'], response: recommendationsSchema })
  recommendations(): Promise<RecommendationReport> {
    return this.health.recommendations();
  }
}

import { EventEmitter } from 'node:events';
import { Injectable } from '@nestjs/common';

/**
 * In-process fleet changes, the seam between feature modules: the registry says a device went offline, the
 * scheduler re-places, the event stream forwards it to dashboards. Payloads are small and already persisted.
 */
export interface FleetEventMap {
  'device.enrolled': { deviceId: string; name: string; labels: Record<string, string> };
  'device.status': { deviceId: string; status: 'online' | 'offline' | 'draining' | 'revoked'; previous: string | null; at: string };
  'device.updated': { deviceId: string; fields: string[] };
  'device.telemetry': { deviceId: string; at: string };
  /** an event a device reported (outbox kind `event`, stored before this fires) */
  'device.event': { deviceId: string; seq: number; level: 'debug' | 'info' | 'warn' | 'error'; code: string; message: string; at: string };
  /** a device acknowledged a command [P-3.9] */
  'command.ack': { deviceId: string; commandId: string; status: 'accepted' | 'completed' | 'rejected' | 'failed'; code: string | null; message: string | null };
  'model-state.changed': { deviceId: string; modelId: string; state: string; at: string };
  /** `name` as it is now, or was when deleted (listeners can no longer read a deleted row) */
  'catalog.changed': { modelId: string; name: string; action: 'created' | 'updated' | 'deleted' };
  'deployment.changed': { deploymentId: string; action: 'created' | 'updated' | 'deleted' };
  /** the fleet file's routing block changed (the gateway reloads it with FleetService.routing()) */
  'routing.changed': { at: string };
  'placement.changed': { deviceId: string; desiredVersion: number };
  /** the gateway finished a request (recorded in inference_requests) */
  'gateway.request': {
    requestId: string;
    model: string | null;
    requestedModel: string;
    deviceId: string | null;
    cloud: boolean;
    outcome: 'success' | 'failed' | 'timeout' | 'cancelled' | 'rejected';
    latencyMs: number;
    ttftMs: number | null;
    tokensIn: number;
    tokensOut: number;
    retries: number;
  };
  'alert.changed': { alertId: string; state: 'open' | 'resolved'; rule: string; subject: string; severity: 'info' | 'warning' | 'critical' };
  /** fleet health moved between healthy / degraded / unhealthy (evaluated with the alert rules) */
  'fleet.health': { status: 'healthy' | 'degraded' | 'unhealthy'; previous: 'healthy' | 'degraded' | 'unhealthy' | null; at: string };
}

export type FleetEventName = keyof FleetEventMap;
export type FleetEvent = { [K in FleetEventName]: { type: K; data: FleetEventMap[K] } }[FleetEventName];

@Injectable()
export class FleetEvents {
  private readonly emitter = new EventEmitter({ captureRejections: false });

  constructor() {
    this.emitter.setMaxListeners(1000);
  }

  emit<K extends FleetEventName>(type: K, data: FleetEventMap[K]): void {
    this.emitter.emit(type, data);
    this.emitter.emit('*', { type, data });
  }

  on<K extends FleetEventName>(type: K, listener: (data: FleetEventMap[K]) => void): () => void {
    this.emitter.on(type, listener);
    return () => this.emitter.off(type, listener);
  }

  /** Every event, for streams to dashboards. */
  onAny(listener: (event: FleetEvent) => void): () => void {
    this.emitter.on('*', listener);
    return () => this.emitter.off('*', listener);
  }
}

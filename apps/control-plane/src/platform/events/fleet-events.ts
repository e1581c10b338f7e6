import { EventEmitter } from 'node:events';
import { Injectable } from '@nestjs/common';
import type { FleetEventMap, FleetEventName } from '@flotilla/protocol';

/**
 * In-process fleet changes, the seam between feature modules: the registry says a device went offline, the
 * scheduler re-places, the event stream forwards it to dashboards. Payloads are small and already persisted. Their
 * shapes are part of the REST contract (`GET /api/v1/events/stream`), so they are defined in `@flotilla/protocol`.
 */
export type { FleetEventMap, FleetEventName };
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

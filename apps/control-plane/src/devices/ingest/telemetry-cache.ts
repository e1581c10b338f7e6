import { Injectable } from '@nestjs/common';
import type { Telemetry } from '@flotilla/protocol';

/**
 * The newest stored telemetry sample of each device (by the sample's `ts`), kept in memory for the device detail,
 * alert rules and metrics. Empty after a restart until devices report again; rollups hold the history.
 */
@Injectable()
export class TelemetryCache {
  private readonly samples = new Map<string, { sample: Telemetry; receivedAt: number }>();

  /** Keeps `sample` if it is newer than the one held. */
  offer(deviceId: string, sample: Telemetry, receivedAt: number): void {
    const held = this.samples.get(deviceId);
    if (!held || held.sample.ts <= sample.ts) this.samples.set(deviceId, { sample, receivedAt });
  }

  latest(deviceId: string): { sample: Telemetry; receivedAt: number } | undefined {
    return this.samples.get(deviceId);
  }

  /** Every device's newest sample. */
  all(): ReadonlyMap<string, { sample: Telemetry; receivedAt: number }> {
    return this.samples;
  }

  forget(deviceId: string): void {
    this.samples.delete(deviceId);
  }
}

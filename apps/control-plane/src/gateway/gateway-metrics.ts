import { Injectable } from '@nestjs/common';
import { MetricsRegistry } from '../platform/metrics/metrics-registry.js';
import type { RequestRecord } from './accounting.js';
import { Balancer } from './balancer.js';
import { Dispatcher } from './dispatcher.js';

/** Whole requests: milliseconds on a warm small model, up to the 30 s deadline (and a little past it). */
const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60];
const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The gateway's series in `/metrics`. Labels stay bounded: `model` is the model that answered (`none` when the request
 * ended before one was chosen, `cloud:<name>` for the fallback), `device` a device id, `cloud` or `none`; client-chosen
 * names (an unknown model) never become label values.
 */
@Injectable()
export class GatewayMetrics {
  private readonly requests;
  private readonly duration;
  private readonly ttft;
  private readonly retries;
  private readonly tokens;

  constructor(registry: MetricsRegistry, balancer: Balancer, dispatcher: Dispatcher) {
    this.requests = registry.counter({
      name: 'flotilla_gateway_requests_total',
      help: 'Chat completions finished by the gateway, by answering model, device and outcome (success, failed, timeout, cancelled, rejected).',
      labelNames: ['model', 'device', 'outcome'],
    });
    this.duration = registry.histogram({
      name: 'flotilla_gateway_request_duration_seconds',
      help: 'Gateway chat completion latency (arrival to last byte, failovers included), by model and device.',
      labelNames: ['model', 'device'],
      buckets: LATENCY_BUCKETS,
    });
    this.ttft = registry.histogram({
      name: 'flotilla_gateway_time_to_first_token_seconds',
      help: 'Time from arrival to the first token a device produced for the request, by model and device.',
      labelNames: ['model', 'device'],
      buckets: TTFT_BUCKETS,
    });
    this.retries = registry.counter({
      name: 'flotilla_gateway_retries_total',
      help: 'Failover attempts (a request moved to another device), by model and the device that finally answered.',
      labelNames: ['model', 'device'],
    });
    this.tokens = registry.counter({
      name: 'flotilla_gateway_tokens_total',
      help: 'Tokens through the gateway, by model, device and direction (in: prompt, out: completion).',
      labelNames: ['model', 'device', 'direction'],
    });
    registry.gauge({
      name: 'flotilla_gateway_outstanding_requests',
      help: 'Requests holding a slot on a device now, by model and device.',
      labelNames: ['model', 'device'],
      collect: (g) => {
        g.reset();
        for (const d of balancer.loadByDevice()) {
          for (const [model, n] of d.byModel) g.set({ model, device: d.deviceId }, n);
        }
      },
    });
    registry.gauge({
      name: 'flotilla_gateway_device_outstanding_requests',
      help: 'Requests holding a slot on each device now, all models together.',
      labelNames: ['device'],
      collect: (g) => {
        g.reset();
        for (const d of balancer.loadByDevice()) g.set({ device: d.deviceId }, d.outstanding);
      },
    });
    registry.gauge({
      name: 'flotilla_gateway_device_concurrency_limit',
      help: 'Requests one device runs at once before the next one waits (routing.maxConcurrentPerDevice or FLOTILLA_GATEWAY_DEVICE_CONCURRENCY).',
      collect: (g) => g.set(undefined, balancer.deviceConcurrency),
    });
    registry.gauge({
      name: 'flotilla_gateway_device_cooldown',
      help: '1 while a device is in cooldown after repeated failures, else 0.',
      labelNames: ['device'],
      collect: (g) => {
        g.reset();
        for (const d of balancer.loadByDevice()) g.set({ device: d.deviceId }, d.coolingDown ? 1 : 0);
      },
    });
    registry.gauge({
      name: 'flotilla_gateway_queue_length',
      help: 'Requests waiting in the gateway for a free device slot, by model.',
      labelNames: ['model'],
      collect: (g) => {
        g.reset();
        for (const [model, n] of balancer.queuedByModel()) g.set({ model }, n);
      },
    });
    registry.gauge({
      name: 'flotilla_gateway_jobs_in_flight',
      help: 'Jobs dispatched to devices over MQTT and not yet answered.',
      collect: (g) => g.set(undefined, dispatcher.inFlight),
    });
  }

  observe(r: RequestRecord): void {
    const model = modelLabel(r);
    const device = deviceLabel(r);
    this.requests.inc({ model, device, outcome: r.outcome });
    this.duration.observe({ model, device }, r.latencyMs / 1000);
    if (r.ttftMs !== null) this.ttft.observe({ model, device }, r.ttftMs / 1000);
    if (r.retries > 0) this.retries.inc({ model, device }, r.retries);
    if (r.tokensIn > 0) this.tokens.inc({ model, device, direction: 'in' }, r.tokensIn);
    if (r.tokensOut > 0) this.tokens.inc({ model, device, direction: 'out' }, r.tokensOut);
  }
}

/** The answering model, `none` before one was chosen (never the client's unchecked name). */
export function modelLabel(r: Pick<RequestRecord, 'model'>): string {
  return r.model ?? 'none';
}

export function deviceLabel(r: Pick<RequestRecord, 'deviceId' | 'cloud'>): string {
  return r.deviceId ?? (r.cloud ? 'cloud' : 'none');
}

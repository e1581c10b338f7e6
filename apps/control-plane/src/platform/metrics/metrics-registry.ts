import { Injectable } from '@nestjs/common';
import * as prom from 'prom-client';

/**
 * The control plane's Prometheus metrics on prom-client (text exposition format 0.0.4). One prom-client `Registry` per
 * `MetricsRegistry`, never the global default one: tests run several control planes in one process. Modules keep the
 * small API below (counter, gauge with an optional collector, histogram); prom-client keeps the series and writes the
 * text. The list of series served is committed in test/observability/metrics-series.json.
 */
export type Labels = Record<string, string | number>;

/** Every label of the metric, each once (a series is always addressed by its full label set). */
export type LabelSet<L extends string> = Record<L, string | number>;

export interface MetricOptions<L extends string> {
  /** `flotilla_...`, [a-zA-Z_:][a-zA-Z0-9_:]* */
  name: string;
  help: string;
  labelNames?: readonly L[];
}

export interface GaugeOptions<L extends string> extends MetricOptions<L> {
  /** Called before each scrape to set the current values (e.g. from the database or the broker). */
  collect?: (gauge: Gauge<L>) => void | Promise<void>;
}

export interface HistogramOptions<L extends string> extends MetricOptions<L> {
  /** Upper bounds, ascending; +Inf is implied. */
  buckets?: readonly number[];
}

export const DEFAULT_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type MetricType = 'counter' | 'gauge' | 'histogram';

abstract class Metric<L extends string> {
  abstract readonly type: MetricType;
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];

  constructor(options: MetricOptions<L>) {
    if (!NAME.test(options.name)) throw new Error(`invalid metric name ${options.name}`);
    for (const label of options.labelNames ?? []) {
      if (!LABEL.test(label) || label.startsWith('__') || label === 'le') throw new Error(`invalid label name ${label} on ${options.name}`);
    }
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames ?? [];
  }

  /** The prom-client metric behind this one. */
  protected abstract readonly prom: prom.Counter<L> | prom.Gauge<L> | prom.Histogram<L>;

  async prepare(): Promise<void> {}

  /** Removes every series whose labels include `match` (a deleted device's or model's). */
  async removeMatching(match: Labels): Promise<void> {
    const entries = Object.entries(match);
    if (!entries.every(([name]) => this.labelNames.includes(name as L))) return;
    const { values } = await this.prom.get();
    for (const { labels } of values) {
      if (!entries.every(([name, value]) => String(labels[name as L]) === String(value))) continue;
      // A histogram lists each series once per bucket; its series is its labels without `le`.
      const { le: _le, ...series } = labels as Partial<Record<L | 'le', string | number>>;
      this.prom.remove(series as prom.LabelValues<L>);
    }
  }
}

export class Counter<L extends string = string> extends Metric<L> {
  readonly type = 'counter';
  protected readonly prom: prom.Counter<L>;

  constructor(options: MetricOptions<L>, registry: prom.Registry) {
    super(options);
    this.prom = new prom.Counter({ name: options.name, help: options.help, labelNames: options.labelNames ?? [], registers: [registry] });
  }

  inc(labels?: LabelSet<L>, value = 1): void {
    if (labels) this.prom.inc(labels, value);
    else this.prom.inc(value);
  }
}

export class Gauge<L extends string = string> extends Metric<L> {
  readonly type = 'gauge';
  protected readonly prom: prom.Gauge<L>;
  private readonly collector: GaugeOptions<L>['collect'];

  constructor(options: GaugeOptions<L>, registry: prom.Registry) {
    super(options);
    this.collector = options.collect;
    this.prom = new prom.Gauge({ name: options.name, help: options.help, labelNames: options.labelNames ?? [], registers: [registry] });
    // prom-client starts a gauge without labels at 0; a value nobody has set yet (fleet health before the first
    // assessment) is unknown, not 0, so the series appears only once set.
    this.reset();
  }

  set(labels: LabelSet<L> | undefined, value: number): void {
    if (labels) this.prom.set(labels, value);
    else this.prom.set(value);
  }

  inc(labels?: LabelSet<L>, value = 1): void {
    if (labels) this.prom.inc(labels, value);
    else this.prom.inc(value);
  }

  dec(labels?: LabelSet<L>, value = 1): void {
    this.inc(labels, -value);
  }

  /** Drops every series, e.g. before a collector sets the current ones (statuses that no longer exist vanish). */
  reset(): void {
    this.prom.reset();
    if (this.labelNames.length === 0) this.prom.remove({});
  }

  override async prepare(): Promise<void> {
    await this.collector?.(this);
  }
}

export class Histogram<L extends string = string> extends Metric<L> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  protected readonly prom: prom.Histogram<L>;

  constructor(options: HistogramOptions<L>, registry: prom.Registry) {
    super(options);
    const buckets = [...(options.buckets ?? DEFAULT_SECONDS_BUCKETS)];
    for (let i = 1; i < buckets.length; i++) {
      if ((buckets[i] as number) <= (buckets[i - 1] as number)) throw new Error(`histogram ${options.name}: buckets must ascend`);
    }
    this.buckets = buckets;
    this.prom = new prom.Histogram({ name: options.name, help: options.help, labelNames: options.labelNames ?? [], buckets, registers: [registry] });
  }

  observe(labels: LabelSet<L> | undefined, value: number): void {
    if (!Number.isFinite(value)) return;
    if (labels) this.prom.observe(labels, value);
    else this.prom.observe(value);
  }

  /** Starts a timer; calling the result observes the elapsed seconds. */
  startTimer(labels?: Partial<LabelSet<L>>): (more?: Partial<LabelSet<L>>) => number {
    const start = process.hrtime.bigint();
    return (more) => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const all = labels || more ? ({ ...labels, ...more } as LabelSet<L>) : undefined;
      this.observe(all, seconds);
      return seconds;
    };
  }
}

export type AnyMetric = Counter | Gauge | Histogram;

/**
 * The process's metrics, served at `/metrics`. Modules register their metrics here (the gateway later adds its request
 * metrics); registering the same name again returns the existing metric when type and labels agree.
 */
@Injectable()
export class MetricsRegistry {
  private readonly metrics = new Map<string, Metric<string>>();
  /** This instance's own prom-client registry (never `prom.register`, the process-wide default). */
  private readonly registry = new prom.Registry();

  counter<L extends string = never>(options: MetricOptions<L>): Counter<L> {
    return this.register(options, 'counter', () => new Counter<L>(options, this.registry));
  }

  gauge<L extends string = never>(options: GaugeOptions<L>): Gauge<L> {
    return this.register(options, 'gauge', () => new Gauge<L>(options, this.registry));
  }

  histogram<L extends string = never>(options: HistogramOptions<L>): Histogram<L> {
    return this.register(options, 'histogram', () => new Histogram<L>(options, this.registry));
  }

  get(name: string): AnyMetric | undefined {
    return this.metrics.get(name) as AnyMetric | undefined;
  }

  /**
   * Removes the series whose labels include `match` from every metric that has those labels, e.g. `{ device: id }`
   * when a device is revoked: its series would otherwise stay in every scrape for the life of the process.
   */
  async removeSeries(match: Labels): Promise<void> {
    await Promise.all([...this.metrics.values()].map((m) => m.removeMatching(match)));
  }

  /** The text exposition of every metric; gauges with collectors are refreshed first (one failing is skipped). */
  async render(onCollectError?: (name: string, error: unknown) => void): Promise<string> {
    const all = [...this.metrics.values()];
    await Promise.all(
      all.map((m) =>
        m.prepare().catch((error: unknown) => {
          onCollectError?.(m.name, error);
        }),
      ),
    );
    // One family after the other, no blank line between them (prom-client's `metrics()` adds one).
    const families = await Promise.all(all.map((m) => this.registry.getSingleMetricAsString(m.name)));
    return `${families.join('\n')}\n`;
  }

  private register<L extends string, M extends Metric<L>>(options: MetricOptions<L>, type: MetricType, create: () => M): M {
    const existing = this.metrics.get(options.name);
    if (existing) {
      const same = existing.type === type && existing.labelNames.join() === (options.labelNames ?? []).join();
      if (!same) throw new Error(`metric ${options.name} is already registered with another type or labels`);
      return existing as unknown as M;
    }
    const metric = create();
    this.metrics.set(options.name, metric);
    return metric;
  }
}

/** The content type Prometheus expects for the text format (prom-client's `Registry.PROMETHEUS_CONTENT_TYPE`). */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

import { Injectable } from '@nestjs/common';

/**
 * A small Prometheus registry (text exposition format 0.0.4): counters, gauges and histograms with labels.
 * prom-client is not a dependency; this covers what the control plane and the gateway need.
 */
export type Labels = Record<string, string | number>;

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

  /** A stable key for a label set; unknown or missing labels are refused so series stay consistent. */
  protected key(labels: Partial<Record<L, string | number>> | undefined): string {
    const given: Partial<Record<L, string | number>> = labels ?? {};
    for (const name of Object.keys(given)) {
      if (!this.labelNames.includes(name as L)) throw new Error(`metric ${this.name} has no label ${name}`);
    }
    return this.labelNames.map((name) => String(given[name] ?? '')).join('\u0000');
  }

  protected labelText(key: string, extra?: [string, string]): string {
    const values = this.labelNames.length ? key.split('\u0000') : [];
    const pairs = this.labelNames.map((name, i) => `${name}="${escapeLabel(values[i] ?? '')}"`);
    if (extra) pairs.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
    return pairs.length ? `{${pairs.join(',')}}` : '';
  }

  abstract samples(): string[];
  async prepare(): Promise<void> {}
}

export class Counter<L extends string = string> extends Metric<L> {
  readonly type = 'counter';
  private readonly values = new Map<string, number>();

  inc(labels?: Partial<Record<L, string | number>>, value = 1): void {
    if (value < 0 || !Number.isFinite(value)) throw new Error(`counter ${this.name} can only increase`);
    const key = this.key(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + value);
  }

  get(labels?: Partial<Record<L, string | number>>): number {
    return this.values.get(this.key(labels)) ?? 0;
  }

  samples(): string[] {
    return [...this.values].map(([key, value]) => `${this.name}${this.labelText(key)} ${formatValue(value)}`);
  }
}

export class Gauge<L extends string = string> extends Metric<L> {
  readonly type = 'gauge';
  private readonly values = new Map<string, number>();
  private readonly collector: GaugeOptions<L>['collect'];

  constructor(options: GaugeOptions<L>) {
    super(options);
    this.collector = options.collect;
  }

  set(labels: Partial<Record<L, string | number>> | undefined, value: number): void {
    this.values.set(this.key(labels), value);
  }

  inc(labels?: Partial<Record<L, string | number>>, value = 1): void {
    const key = this.key(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + value);
  }

  dec(labels?: Partial<Record<L, string | number>>, value = 1): void {
    this.inc(labels, -value);
  }

  get(labels?: Partial<Record<L, string | number>>): number | undefined {
    return this.values.get(this.key(labels));
  }

  /** Drops every series, e.g. before a collector sets the current ones (statuses that no longer exist vanish). */
  reset(): void {
    this.values.clear();
  }

  override async prepare(): Promise<void> {
    await this.collector?.(this);
  }

  samples(): string[] {
    return [...this.values].map(([key, value]) => `${this.name}${this.labelText(key)} ${formatValue(value)}`);
  }
}

interface HistogramSeries {
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram<L extends string = string> extends Metric<L> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  private readonly series = new Map<string, HistogramSeries>();

  constructor(options: HistogramOptions<L>) {
    super(options);
    const buckets = [...(options.buckets ?? DEFAULT_SECONDS_BUCKETS)];
    for (let i = 1; i < buckets.length; i++) {
      if ((buckets[i] as number) <= (buckets[i - 1] as number)) throw new Error(`histogram ${options.name}: buckets must ascend`);
    }
    this.buckets = buckets;
  }

  observe(labels: Partial<Record<L, string | number>> | undefined, value: number): void {
    if (!Number.isFinite(value)) return;
    const key = this.key(labels);
    let s = this.series.get(key);
    if (!s) {
      s = { counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    // Buckets are cumulative in the exposition; store per-bucket counts and sum them when printing.
    const index = this.buckets.findIndex((upper) => value <= upper);
    if (index >= 0) s.counts[index] = (s.counts[index] ?? 0) + 1;
    s.sum += value;
    s.count += 1;
  }

  /** Starts a timer; calling the result observes the elapsed seconds. */
  startTimer(labels?: Partial<Record<L, string | number>>): (more?: Partial<Record<L, string | number>>) => number {
    const start = process.hrtime.bigint();
    return (more) => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      this.observe({ ...labels, ...more }, seconds);
      return seconds;
    };
  }

  count(labels?: Partial<Record<L, string | number>>): number {
    return this.series.get(this.key(labels))?.count ?? 0;
  }

  samples(): string[] {
    const lines: string[] = [];
    for (const [key, s] of this.series) {
      let cumulative = 0;
      this.buckets.forEach((upper, i) => {
        cumulative += s.counts[i] ?? 0;
        lines.push(`${this.name}_bucket${this.labelText(key, ['le', formatValue(upper)])} ${cumulative}`);
      });
      lines.push(`${this.name}_bucket${this.labelText(key, ['le', '+Inf'])} ${s.count}`);
      lines.push(`${this.name}_sum${this.labelText(key)} ${formatValue(s.sum)}`);
      lines.push(`${this.name}_count${this.labelText(key)} ${s.count}`);
    }
    return lines;
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

  counter<L extends string = never>(options: MetricOptions<L>): Counter<L> {
    return this.register(options, 'counter', () => new Counter<L>(options));
  }

  gauge<L extends string = never>(options: GaugeOptions<L>): Gauge<L> {
    return this.register(options, 'gauge', () => new Gauge<L>(options));
  }

  histogram<L extends string = never>(options: HistogramOptions<L>): Histogram<L> {
    return this.register(options, 'histogram', () => new Histogram<L>(options));
  }

  get(name: string): AnyMetric | undefined {
    return this.metrics.get(name) as AnyMetric | undefined;
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
    const out: string[] = [];
    for (const m of all) {
      out.push(`# HELP ${m.name} ${escapeHelp(m.help)}`, `# TYPE ${m.name} ${m.type}`, ...m.samples());
    }
    return `${out.join('\n')}\n`;
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

/** The content type Prometheus expects for the text format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

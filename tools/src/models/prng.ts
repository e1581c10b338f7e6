// Deterministic pseudo-random numbers. splitmix64 (BigInt, called rarely) derives
// per-tensor seeds; xoshiro128** (32-bit integer ops, no allocation) fills tensors,
// which keeps a 100M-parameter model to a few seconds of pure JS.

const MASK64 = (1n << 64n) - 1n;

/** One splitmix64 step: returns the next state and its output. */
export function splitmix64(state: bigint): { state: bigint; value: bigint } {
  const next = (state + 0x9e3779b97f4a7c15n) & MASK64;
  let z = next;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return { state: next, value: z ^ (z >> 31n) };
}

/** FNV-1a 64-bit hash of a string, used to give every tensor its own stream. */
export function fnv1a64(text: string): bigint {
  let hash = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & MASK64;
  }
  return hash;
}

const INV_2_24 = 1 / 16_777_216;

export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** Seeds the four 32-bit words from splitmix64(seed), never all zero. */
  constructor(seed: bigint) {
    let state = seed & MASK64;
    const words: number[] = [];
    for (let i = 0; i < 2; i++) {
      const step = splitmix64(state);
      state = step.state;
      words.push(Number(step.value & 0xffffffffn), Number(step.value >> 32n));
    }
    this.s0 = words[0] ?? 1;
    this.s1 = words[1] ?? 0;
    this.s2 = words[2] ?? 0;
    this.s3 = words[3] ?? 0;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Stream for one named purpose (e.g. a tensor) under a model seed. */
  static forStream(seed: bigint, name: string): Xoshiro128 {
    return new Xoshiro128(splitmix64((seed ^ fnv1a64(name)) & MASK64).value);
  }

  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Fills `out` with uniform values in [-amplitude, amplitude). Hot loop: state kept in locals. */
  fillUniform(out: Float32Array, amplitude: number): void {
    let s0 = this.s0;
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    const scale = 2 * amplitude * INV_2_24;
    const n = out.length;
    for (let i = 0; i < n; i++) {
      const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      out[i] = (r >>> 8) * scale - amplitude;
    }
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

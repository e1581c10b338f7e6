// Tensor encodings written by the generator: F32, F16 and Q8_0 (ggml layouts).

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE float32 -> float16 bits, round to nearest even (ggml's FP32_TO_FP16). */
export function f32ToF16Bits(value: number): number {
  f32[0] = value;
  const bits = u32[0] ?? 0;
  return f32BitsToF16(bits, value);
}

function f32BitsToF16(bits: number, value: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x47800000) {
    // >= 65536, Inf or NaN
    return sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00);
  }
  if (abs < 0x38800000) {
    // below the smallest normal half (2^-14): subnormal, multiples of 2^-24
    return sign | Math.round(Math.abs(value) * 16_777_216);
  }
  const mantissaOdd = (abs >>> 13) & 1;
  return sign | ((abs - 0x38000000 + 0xfff + mantissaOdd) >>> 13);
}

/** float16 bits -> number (for tests and readers). */
export function f16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export const Q8_0_BLOCK_VALUES = 32;
export const Q8_0_BLOCK_BYTES = 34;

export function encodeF32(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

export function encodeF16(values: Float32Array): Uint8Array {
  const out = new Uint16Array(values.length);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    out[i] = f32BitsToF16(bits[i] ?? 0, values[i] ?? 0);
  }
  return new Uint8Array(out.buffer);
}

/** Q8_0: per 32 values an f16 scale (absmax / 127) then 32 int8 (ggml quantize_row_q8_0_ref). */
export function encodeQ8_0(values: Float32Array): Uint8Array {
  if (values.length % Q8_0_BLOCK_VALUES !== 0) {
    throw new RangeError(`Q8_0 needs a multiple of ${Q8_0_BLOCK_VALUES} values, got ${values.length}`);
  }
  const blocks = values.length / Q8_0_BLOCK_VALUES;
  const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  const qs = new Int8Array(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const base = b * Q8_0_BLOCK_VALUES;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK_VALUES; j++) {
      const a = Math.abs(values[base + j] ?? 0);
      if (a > amax) amax = a;
    }
    const d = amax / 127;
    const id = d === 0 ? 0 : 1 / d;
    const offset = b * Q8_0_BLOCK_BYTES;
    view.setUint16(offset, f32ToF16Bits(d), true);
    for (let j = 0; j < Q8_0_BLOCK_VALUES; j++) {
      const x = (values[base + j] ?? 0) * id;
      // roundf: half away from zero
      qs[offset + 2 + j] = x < 0 ? -Math.round(-x) : Math.round(x);
    }
  }
  return out;
}

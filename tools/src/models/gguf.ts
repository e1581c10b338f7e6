// Minimal GGUF v3 writer and header reader (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
import { createHash, randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { encodeF16, encodeF32, encodeQ8_0, Q8_0_BLOCK_BYTES, Q8_0_BLOCK_VALUES } from './encode.js';

export const GGUF_MAGIC = 'GGUF';
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value types (u32 on disk). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** ggml tensor types this module writes. */
export const GgmlType = { F32: 0, F16: 1, Q8_0: 8 } as const;
export type GgmlTypeName = keyof typeof GgmlType;

export type GgufScalar =
  | { type: 'uint32'; value: number }
  | { type: 'int32'; value: number }
  | { type: 'float32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'uint64'; value: bigint };

export type GgufArray =
  | { type: 'array'; itemType: 'string'; value: readonly string[] }
  | { type: 'array'; itemType: 'uint32' | 'int32' | 'float32'; value: readonly number[] };

export type GgufValue = GgufScalar | GgufArray;

/** Values read from files may use any GGUF type; numbers wider than 53 bits come back as bigint. */
export type GgufReadValue = string | number | bigint | boolean | GgufReadValue[];

export interface GgufTensorSource {
  name: string;
  /** Dimensions with ne0 (the contiguous one) first. */
  dims: readonly number[];
  type: GgmlTypeName;
  /**
   * Fills `out` with the float values of consecutive rows starting at `firstRow`
   * (a row is dims[0] values). Called in row order, so a stateful PRNG may be used.
   */
  fillRows(out: Float32Array, firstRow: number): void;
}

export interface GgufWriteInput {
  metadata: ReadonlyArray<readonly [string, GgufValue]>;
  tensors: readonly GgufTensorSource[];
  alignment?: number;
}

export interface GgufWriteResult {
  path: string;
  sha256: string;
  sizeBytes: number;
}

export function tensorElementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

export function tensorByteSize(type: GgmlTypeName, dims: readonly number[]): number {
  const n = tensorElementCount(dims);
  switch (type) {
    case 'F32':
      return n * 4;
    case 'F16':
      return n * 2;
    case 'Q8_0':
      if ((dims[0] ?? 0) % Q8_0_BLOCK_VALUES !== 0) {
        throw new RangeError(`Q8_0 tensor rows must be a multiple of ${Q8_0_BLOCK_VALUES} (got ne0=${dims[0]})`);
      }
      return (n / Q8_0_BLOCK_VALUES) * Q8_0_BLOCK_BYTES;
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** Growable little-endian byte builder for the header. */
class ByteBuilder {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + extra) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u32(v: number): void {
    this.reserve(4);
    this.length = this.buf.writeUInt32LE(v, this.length);
  }
  i32(v: number): void {
    this.reserve(4);
    this.length = this.buf.writeInt32LE(v, this.length);
  }
  f32(v: number): void {
    this.reserve(4);
    this.length = this.buf.writeFloatLE(v, this.length);
  }
  u64(v: bigint | number): void {
    this.reserve(8);
    this.length = this.buf.writeBigUInt64LE(BigInt(v), this.length);
  }
  u8(v: number): void {
    this.reserve(1);
    this.length = this.buf.writeUInt8(v, this.length);
  }
  str(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.reserve(bytes.length);
    bytes.copy(this.buf, this.length);
    this.length += bytes.length;
  }
  zeros(n: number): void {
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

const SCALAR_TYPE_IDS = {
  uint32: GgufValueType.UINT32,
  int32: GgufValueType.INT32,
  float32: GgufValueType.FLOAT32,
  bool: GgufValueType.BOOL,
  string: GgufValueType.STRING,
  uint64: GgufValueType.UINT64,
} as const;

function writeValue(b: ByteBuilder, value: GgufValue): void {
  if (value.type === 'array') {
    b.u32(GgufValueType.ARRAY);
    b.u32(SCALAR_TYPE_IDS[value.itemType]);
    b.u64(value.value.length);
    if (value.itemType === 'string') {
      for (const s of value.value) b.str(s);
    } else {
      const write = value.itemType === 'float32' ? b.f32.bind(b) : value.itemType === 'int32' ? b.i32.bind(b) : b.u32.bind(b);
      for (const n of value.value) write(n);
    }
    return;
  }
  b.u32(SCALAR_TYPE_IDS[value.type]);
  switch (value.type) {
    case 'uint32':
      b.u32(value.value);
      break;
    case 'int32':
      b.i32(value.value);
      break;
    case 'float32':
      b.f32(value.value);
      break;
    case 'bool':
      b.u8(value.value ? 1 : 0);
      break;
    case 'string':
      b.str(value.value);
      break;
    case 'uint64':
      b.u64(value.value);
      break;
  }
}

// Rows generated per chunk: bounds memory while keeping each write large.
const CHUNK_VALUES = 1 << 20;

function encode(type: GgmlTypeName, values: Float32Array): Uint8Array {
  switch (type) {
    case 'F32':
      return encodeF32(values);
    case 'F16':
      return encodeF16(values);
    case 'Q8_0':
      return encodeQ8_0(values);
  }
}

/**
 * Writes a GGUF file atomically: a temp file in the target directory, fsync, then rename.
 * The sha256 is computed while writing, so the file is never read back.
 */
export async function writeGguf(path: string, input: GgufWriteInput): Promise<GgufWriteResult> {
  if (endianness() !== 'LE') throw new Error('GGUF writer needs a little-endian host');
  const alignment = input.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const metadata = [...input.metadata];
  if (!metadata.some(([key]) => key === 'general.alignment')) {
    metadata.push(['general.alignment', { type: 'uint32', value: alignment }]);
  }
  const names = new Set<string>();
  for (const t of input.tensors) {
    if (names.has(t.name)) throw new Error(`duplicate tensor name ${t.name}`);
    names.add(t.name);
  }

  const header = new ByteBuilder();
  header.u32(Buffer.from(GGUF_MAGIC, 'ascii').readUInt32LE(0));
  header.u32(GGUF_VERSION);
  header.u64(input.tensors.length);
  header.u64(metadata.length);
  for (const [key, value] of metadata) {
    header.str(key);
    writeValue(header, value);
  }
  let offset = 0;
  const layout = input.tensors.map((t) => {
    const size = tensorByteSize(t.type, t.dims);
    const entry = { tensor: t, offset, size };
    offset = alignUp(offset + size, alignment);
    return entry;
  });
  for (const { tensor, offset: tensorOffset } of layout) {
    header.str(tensor.name);
    header.u32(tensor.dims.length);
    for (const d of tensor.dims) header.u64(d);
    header.u32(GgmlType[tensor.type]);
    header.u64(tensorOffset);
  }
  header.zeros(alignUp(header.length, alignment) - header.length);

  await mkdir(dirname(path), { recursive: true });
  const tempPath = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const hash = createHash('sha256');
  const handle = await open(tempPath, 'w');
  let written = 0;
  const put = async (bytes: Uint8Array): Promise<void> => {
    hash.update(bytes);
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
      done += bytesWritten;
    }
    written += bytes.length;
  };
  try {
    await put(header.bytes());
    const dataStart = written;
    for (const { tensor, offset: tensorOffset, size } of layout) {
      const pad = dataStart + tensorOffset - written;
      if (pad > 0) await put(new Uint8Array(pad));
      const rowLength = tensor.dims[0] ?? 1;
      const rows = tensorElementCount(tensor.dims) / rowLength;
      const rowsPerChunk = Math.max(1, Math.floor(CHUNK_VALUES / rowLength));
      const before = written;
      for (let row = 0; row < rows; row += rowsPerChunk) {
        const count = Math.min(rowsPerChunk, rows - row);
        const values = new Float32Array(count * rowLength);
        tensor.fillRows(values, row);
        await put(encode(tensor.type, values));
      }
      if (written - before !== size) throw new Error(`tensor ${tensor.name}: wrote ${written - before} bytes, expected ${size}`);
    }
    const tail = alignUp(written, alignment) - written;
    if (tail > 0) await put(new Uint8Array(tail));
    await handle.sync();
    await handle.close();
    await rename(tempPath, path);
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(tempPath, { force: true });
    throw error;
  }
  const { size: sizeBytes } = await stat(path);
  return { path, sha256: hash.digest('hex'), sizeBytes };
}

export interface GgufTensorInfo {
  name: string;
  dims: number[];
  /** ggml type id as stored (0 F32, 1 F16, 8 Q8_0, 12 Q4_K, ...). */
  type: number;
  /** Offset relative to the start of the data section. */
  offset: number;
}

export interface GgufHeader {
  version: number;
  tensorCount: number;
  metadataCount: number;
  metadata: Map<string, GgufReadValue>;
  /** Raw GGUF value type of each key (arrays report ARRAY). */
  metadataTypes: Map<string, number>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute file offset where tensor data starts. */
  dataOffset: number;
}

class NeedMoreBytes extends Error {}

class Cursor {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new NeedMoreBytes();
  }
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.pos++);
  }
  i8(): number {
    this.need(1);
    return this.buf.readInt8(this.pos++);
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  i16(): number {
    this.need(2);
    const v = this.buf.readInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.buf.readInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  f32(): number {
    this.need(4);
    const v = this.buf.readFloatLE(this.pos);
    this.pos += 4;
    return v;
  }
  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  i64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  /** u64 that must fit in a JS number (counts, sizes). */
  size(): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`GGUF size field too large: ${v}`);
    return Number(v);
  }
  str(): string {
    const length = this.size();
    this.need(length);
    const s = this.buf.toString('utf8', this.pos, this.pos + length);
    this.pos += length;
    return s;
  }
}

function narrow(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
}

function readValue(c: Cursor, type: number): GgufReadValue {
  switch (type) {
    case GgufValueType.UINT8:
      return c.u8();
    case GgufValueType.INT8:
      return c.i8();
    case GgufValueType.UINT16:
      return c.u16();
    case GgufValueType.INT16:
      return c.i16();
    case GgufValueType.UINT32:
      return c.u32();
    case GgufValueType.INT32:
      return c.i32();
    case GgufValueType.FLOAT32:
      return c.f32();
    case GgufValueType.BOOL:
      return c.u8() !== 0;
    case GgufValueType.STRING:
      return c.str();
    case GgufValueType.UINT64:
      return narrow(c.u64());
    case GgufValueType.INT64:
      return narrow(c.i64());
    case GgufValueType.FLOAT64:
      return c.f64();
    case GgufValueType.ARRAY: {
      const itemType = c.u32();
      const count = c.size();
      const items: GgufReadValue[] = [];
      for (let i = 0; i < count; i++) items.push(readValue(c, itemType));
      return items;
    }
    default:
      throw new Error(`unknown GGUF value type ${type}`);
  }
}

function parseHeader(buf: Buffer): GgufHeader {
  const c = new Cursor(buf);
  const magic = c.u32();
  if (magic !== Buffer.from(GGUF_MAGIC, 'ascii').readUInt32LE(0)) throw new Error('not a GGUF file (bad magic)');
  const version = c.u32();
  if (version !== 2 && version !== 3) throw new Error(`unsupported GGUF version ${version}`);
  const tensorCount = c.size();
  const metadataCount = c.size();
  const metadata = new Map<string, GgufReadValue>();
  const metadataTypes = new Map<string, number>();
  for (let i = 0; i < metadataCount; i++) {
    const key = c.str();
    const type = c.u32();
    metadataTypes.set(key, type);
    metadata.set(key, readValue(c, type));
  }
  const tensors: GgufTensorInfo[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = c.str();
    const nDims = c.u32();
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.size());
    const type = c.u32();
    const offset = c.size();
    tensors.push({ name, dims, type, offset });
  }
  const alignmentValue = metadata.get('general.alignment');
  const alignment = typeof alignmentValue === 'number' ? alignmentValue : GGUF_DEFAULT_ALIGNMENT;
  return {
    version,
    tensorCount,
    metadataCount,
    metadata,
    metadataTypes,
    tensors,
    alignment,
    dataOffset: alignUp(c.pos, alignment),
  };
}

/** Reads the header (metadata and tensor table) of a GGUF file without loading tensor data. */
export async function readGgufHeader(path: string): Promise<GgufHeader> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    let length = Math.min(size, 1 << 20);
    for (;;) {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buf, 0, length, 0);
      try {
        return parseHeader(buf.subarray(0, bytesRead));
      } catch (error) {
        if (!(error instanceof NeedMoreBytes)) throw error;
        if (length >= size) throw new Error('truncated GGUF header');
        length = Math.min(size, length * 4);
      }
    }
  } finally {
    await handle.close();
  }
}

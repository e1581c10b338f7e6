import { readdir, readFile, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeF16, encodeQ8_0, f16BitsToNumber, f32ToF16Bits } from '../src/models/encode.js';
import {
  generateModel,
  GgmlType,
  GgufValueType,
  PRESETS,
  readGgufHeader,
  SPECIAL_TOKENS,
  TokenType,
  writeGguf,
  type GeneratedModelInfo,
  type GgufTensorSource,
} from '../src/models/index.js';
import { makeTempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir('gguf'));
});
afterAll(async () => {
  await cleanup();
});

describe('tensor encodings', () => {
  it('converts float32 to float16 with round-to-nearest-even', () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(0.5)).toBe(0x3800);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(1e6)).toBe(0x7c00);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001);
    // 1 + 2^-11 lies halfway between two halves: ties go to the even mantissa
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    for (const v of [0.1, -3.75, 12.5, 1e-5, 0.333]) {
      expect(f16BitsToNumber(f32ToF16Bits(v))).toBeCloseTo(v, 3);
    }
    expect([...new Uint16Array(encodeF16(Float32Array.of(1, -2, 0.5)).buffer)]).toEqual([0x3c00, 0xc000, 0x3800]);
  });

  it('writes Q8_0 blocks as an f16 scale followed by 32 int8 values', () => {
    const values = new Float32Array(64);
    for (let i = 0; i < 64; i++) values[i] = (i - 16) / 8;
    const bytes = encodeQ8_0(values);
    expect(bytes.length).toBe(2 * 34);
    const view = new DataView(bytes.buffer);
    const q = new Int8Array(bytes.buffer);
    const scale0 = f16BitsToNumber(view.getUint16(0, true));
    expect(scale0).toBeCloseTo(2 / 127, 4); // absmax of block 0 is |-16/8| = 2
    expect(q[2]).toBe(-127);
    expect(q[2 + 16]).toBe(0);
    for (let j = 0; j < 32; j++) expect((q[2 + j] ?? 0) * scale0).toBeCloseTo(values[j] ?? 0, 1);
    expect(() => encodeQ8_0(new Float32Array(31))).toThrow(/multiple of 32/);
  });
});

describe('GGUF writer', () => {
  const tensors: GgufTensorSource[] = [
    { name: 'a', dims: [32, 2], type: 'F32', fillRows: (out, first) => out.forEach((_, i) => (out[i] = first * 32 + i)) },
    { name: 'b', dims: [5], type: 'F16', fillRows: (out) => void out.fill(1) },
    { name: 'c', dims: [64, 3], type: 'Q8_0', fillRows: (out) => void out.fill(-0.5) },
  ];

  it('writes the header, metadata, tensor table and aligned data as specified', async () => {
    const path = join(dir, 'layout.gguf');
    const result = await writeGguf(path, {
      metadata: [
        ['general.architecture', { type: 'string', value: 'llama' }],
        ['test.u32', { type: 'uint32', value: 7 }],
        ['test.i32', { type: 'int32', value: -7 }],
        ['test.f32', { type: 'float32', value: 0.25 }],
        ['test.bool', { type: 'bool', value: true }],
        ['test.u64', { type: 'uint64', value: 2n ** 40n }],
        ['test.strings', { type: 'array', itemType: 'string', value: ['x', 'yz', '\u2581the'] }],
        ['test.floats', { type: 'array', itemType: 'float32', value: [1.5, -2] }],
        ['test.ints', { type: 'array', itemType: 'int32', value: [3, -4] }],
      ],
      tensors,
    });
    const raw = await readFile(path);
    expect(raw.subarray(0, 4).toString('ascii')).toBe('GGUF');
    expect(raw.readUInt32LE(4)).toBe(3);
    expect(raw.readBigUInt64LE(8)).toBe(3n); // tensors
    expect(raw.readBigUInt64LE(16)).toBe(10n); // 9 keys + general.alignment added by the writer
    const firstKeyLength = Number(raw.readBigUInt64LE(24));
    expect(raw.subarray(32, 32 + firstKeyLength).toString()).toBe('general.architecture');
    expect(raw.readUInt32LE(32 + firstKeyLength)).toBe(GgufValueType.STRING);

    const header = await readGgufHeader(path);
    expect(header.version).toBe(3);
    expect(header.tensorCount).toBe(3);
    expect(header.alignment).toBe(32);
    expect(header.metadata.get('general.alignment')).toBe(32);
    expect(header.metadataTypes.get('general.alignment')).toBe(GgufValueType.UINT32);
    expect(header.metadata.get('test.u32')).toBe(7);
    expect(header.metadata.get('test.i32')).toBe(-7);
    expect(header.metadata.get('test.f32')).toBe(0.25);
    expect(header.metadata.get('test.bool')).toBe(true);
    expect(header.metadata.get('test.u64')).toBe(2 ** 40);
    expect(header.metadataTypes.get('test.u64')).toBe(GgufValueType.UINT64);
    expect(header.metadata.get('test.strings')).toEqual(['x', 'yz', '\u2581the']);
    expect(header.metadata.get('test.floats')).toEqual([1.5, -2]);
    expect(header.metadata.get('test.ints')).toEqual([3, -4]);

    expect(header.dataOffset % 32).toBe(0);
    expect(header.tensors.map((t) => [t.name, t.dims, t.type])).toEqual([
      ['a', [32, 2], GgmlType.F32],
      ['b', [5], GgmlType.F16],
      ['c', [64, 3], GgmlType.Q8_0],
    ]);
    expect(header.tensors.map((t) => t.offset)).toEqual([0, 256, 288]);
    for (const t of header.tensors) expect(t.offset % 32).toBe(0);
    // F32 data rows in order; F16 ones; file padded to the alignment
    const a = new Float32Array(raw.buffer.slice(raw.byteOffset + header.dataOffset, raw.byteOffset + header.dataOffset + 256));
    expect([...a.slice(0, 3)]).toEqual([0, 1, 2]);
    expect(a[63]).toBe(63);
    expect(raw.readUInt16LE(header.dataOffset + 256)).toBe(0x3c00);
    expect(raw.length).toBe(header.dataOffset + 512); // 288 + 6 blocks of 34 bytes = 492, padded to 512
    expect(raw.length % 32).toBe(0);
    expect(result.sizeBytes).toBe(raw.length);
    expect(result.sha256).toBe(createHash('sha256').update(raw).digest('hex'));
  });

  it('leaves no temp file behind, and no target file when a tensor fails', async () => {
    const sub = join(dir, 'atomic');
    await writeGguf(join(sub, 'ok.gguf'), { metadata: [], tensors });
    const failing: GgufTensorSource = {
      name: 'bad',
      dims: [32],
      type: 'F32',
      fillRows: () => {
        throw new Error('boom');
      },
    };
    await expect(writeGguf(join(sub, 'bad.gguf'), { metadata: [], tensors: [failing] })).rejects.toThrow('boom');
    expect(await readdir(sub)).toEqual(['ok.gguf']);
    await expect(writeGguf(join(sub, 'dup.gguf'), { metadata: [], tensors: [tensors[0]!, tensors[0]!] })).rejects.toThrow(/duplicate/);
  });

  it('rejects files that are not GGUF', async () => {
    const path = join(dir, 'not.gguf');
    await writeGguf(path, { metadata: [], tensors: [] });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(path, 'NOPE-not-a-model');
    await expect(readGgufHeader(path)).rejects.toThrow(/bad magic/);
  });
});

describe('generated tiny model', () => {
  let q8: GeneratedModelInfo;
  let f16: GeneratedModelInfo;
  beforeAll(async () => {
    q8 = await generateModel({ out: join(dir, 'tiny-q8_0.gguf'), preset: 'tiny', format: 'q8_0', seed: 7 });
    f16 = await generateModel({ out: join(dir, 'tiny-f16.gguf'), preset: 'tiny', format: 'f16', seed: 7 });
  });

  it('has the llama metadata, SPM vocabulary and ChatML template llama.cpp needs', async () => {
    const h = await readGgufHeader(q8.path);
    const hp = PRESETS.tiny.hyperparameters;
    const m = h.metadata;
    expect(m.get('general.architecture')).toBe('llama');
    expect(m.get('general.file_type')).toBe(7);
    expect(m.get('llama.embedding_length')).toBe(hp.embeddingLength);
    expect(m.get('llama.block_count')).toBe(hp.blockCount);
    expect(m.get('llama.context_length')).toBe(hp.contextLength);
    expect(m.get('llama.rope.dimension_count')).toBe(hp.embeddingLength / hp.headCount);
    expect(m.get('tokenizer.ggml.model')).toBe('llama');
    const tokens = m.get('tokenizer.ggml.tokens') as string[];
    const types = m.get('tokenizer.ggml.token_type') as number[];
    expect(m.get('llama.vocab_size')).toBe(tokens.length);
    expect(tokens.slice(0, 5)).toEqual(['<unk>', '<s>', '</s>', '<|im_start|>', '<|im_end|>']);
    expect(types.slice(0, 5)).toEqual([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL]);
    expect(tokens[5]).toBe('<0x00>');
    expect(tokens[260]).toBe('<0xFF>');
    expect(types.slice(5, 261).every((t) => t === TokenType.BYTE)).toBe(true);
    for (const piece of ['\u2581the', '{', '"', ':', '}', '0', '\u2581hello', 'ing', '":']) expect(tokens).toContain(piece);
    // every multi-character piece can be reached by SPM merges: its prefixes are pieces too
    const set = new Set(tokens);
    for (const t of tokens.slice(261)) expect(set.has([...t].slice(0, -1).join('')) || [...t].length === 1).toBe(true);
    expect(m.get('tokenizer.ggml.eos_token_id')).toBe(SPECIAL_TOKENS.eos.id);
    expect(m.get('tokenizer.ggml.eot_token_id')).toBe(SPECIAL_TOKENS.imEnd.id);
    expect(m.get('tokenizer.chat_template')).toContain('<|im_start|>');
    expect(q8.vocabSize).toBe(tokens.length);
  });

  it('has the tensor shapes and types of the llama architecture', async () => {
    const h = await readGgufHeader(q8.path);
    const hp = PRESETS.tiny.hyperparameters;
    const d = hp.embeddingLength;
    const kv = (d / hp.headCount) * hp.headCountKv;
    const byName = new Map(h.tensors.map((t) => [t.name, t]));
    expect(h.tensorCount).toBe(3 + 9 * hp.blockCount);
    expect(byName.get('token_embd.weight')?.dims).toEqual([d, q8.vocabSize]);
    expect(byName.get('output.weight')?.dims).toEqual([d, q8.vocabSize]);
    expect(byName.get('output_norm.weight')).toMatchObject({ dims: [d], type: GgmlType.F32 });
    expect(byName.get('blk.0.attn_k.weight')).toMatchObject({ dims: [d, kv], type: GgmlType.Q8_0 });
    expect(byName.get('blk.3.ffn_down.weight')).toMatchObject({ dims: [hp.feedForwardLength, d], type: GgmlType.Q8_0 });
    const parameters = h.tensors.reduce((sum, t) => sum + t.dims.reduce((a, b) => a * b, 1), 0);
    expect(parameters).toBe(q8.parameters);
    expect(q8.parameters).toBeGreaterThan(2_000_000);
    expect(q8.parameters).toBeLessThan(10_000_000);
    const fh = await readGgufHeader(f16.path);
    expect(fh.metadata.get('general.file_type')).toBe(1);
    expect(fh.tensors.find((t) => t.name === 'output.weight')?.type).toBe(GgmlType.F16);
    expect((await stat(f16.path)).size).toBe(f16.sizeBytes);
  });

  it('applies the output fixes: embedding dimension 0 offset, suppressed control and byte tokens', async () => {
    const h = await readGgufHeader(f16.path);
    const raw = await readFile(f16.path);
    const d = PRESETS.tiny.hyperparameters.embeddingLength;
    const row = (tensor: string, index: number): number[] => {
      const info = h.tensors.find((t) => t.name === tensor)!;
      const start = h.dataOffset + info.offset + index * d * 2;
      return Array.from({ length: d }, (_, i) => f16BitsToNumber(raw.readUInt16LE(start + 2 * i)));
    };
    for (const token of [SPECIAL_TOKENS.eos.id, SPECIAL_TOKENS.imEnd.id, 5 + 0x41]) {
      const out = row('output.weight', token);
      expect(out[0]).toBe(-10);
      expect(out.slice(1).every((v) => v === 0)).toBe(true);
    }
    const normal = row('output.weight', 400);
    expect(normal.slice(1).some((v) => v !== 0)).toBe(true);
    for (const token of [0, 2, 300, q8.vocabSize - 1]) {
      const embd = row('token_embd.weight', token);
      expect(embd[0]).toBeGreaterThan(3);
      expect(Math.max(...embd.slice(1).map(Math.abs))).toBeLessThanOrEqual(1);
    }
  });
});

describe('determinism', () => {
  it('gives byte-identical files for the same seed and different ones for another seed', async () => {
    const a = await generateModel({ out: join(dir, 'det-a.gguf'), preset: 'tiny', seed: 1234 });
    const b = await generateModel({ out: join(dir, 'det-b.gguf'), preset: 'tiny', seed: 1234 });
    const c = await generateModel({ out: join(dir, 'det-c.gguf'), preset: 'tiny', seed: 1235 });
    expect(a.sha256).toBe(b.sha256);
    expect(a.sizeBytes).toBe(b.sizeBytes);
    expect(Buffer.compare(await readFile(a.path), await readFile(b.path))).toBe(0);
    expect(c.sha256).not.toBe(a.sha256);
    expect(c.sizeBytes).toBe(a.sizeBytes);
    expect(createHash('sha256').update(await readFile(a.path)).digest('hex')).toBe(a.sha256);
  });

  it('validates options', async () => {
    await expect(generateModel({ out: join(dir, 'x.gguf'), seed: -1 })).rejects.toThrow(/seed/);
    await expect(generateModel({ out: join(dir, 'x.gguf'), overrides: { embeddingLength: 100 } })).rejects.toThrow(/multiple of 32/);
  });
});

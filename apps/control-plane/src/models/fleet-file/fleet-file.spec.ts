import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseByteSize } from '@flotilla/protocol';
import { DEFAULT_ROUTING, FleetFileError, parseFleetFile, writeFleetFile, type FleetFileIssue } from './fleet-file.js';

const example = (name: string) => readFile(fileURLToPath(new URL(`../../../../../examples/fleet/${name}`, import.meta.url)), 'utf8');

function issuesOf(text: string): FleetFileIssue[] {
  try {
    parseFleetFile(text);
  } catch (error) {
    if (error instanceof FleetFileError) return error.issues;
    throw error;
  }
  throw new Error('expected the fleet file to be refused');
}

const HEAD = 'apiVersion: flotilla/v1\nkind: Fleet\n';
const MODEL = `models:
  - name: tiny
    sourceUrl: https://models.example/tiny.gguf
    sha256: ${'a'.repeat(64)}
    sizeBytes: 1MiB
    quantization: Q8_0
    memoryBytes: 64MiB
    contextLength: 2048
    tier: small
`;

describe('fleet file', () => {
  it('reads both example shapes: a single device and a distributed fleet', async () => {
    const single = parseFleetFile(await example('single-device.yaml')).file;
    expect(single.models.map((m) => m.name)).toEqual(['qwen2.5-0.5b-instruct-q4_k_m', 'phi-4-mini-instruct-q4_k_m']);
    // A checksum of digits stays text (YAML alone would read it as a number).
    expect(single.models[0]).toMatchObject({ sha256: '1'.repeat(64), sizeBytes: 491_000_000, memoryBytes: Math.round(0.8 * 1024 ** 3) });
    expect(single.deployments.every((d) => d.replicas === 1 && Object.keys(d.labelSelector).length === 0)).toBe(true);
    expect(single.routing?.cloudFallback.enabled).toBe(false);
    const fleet = parseFleetFile(await example('edge-fleet.yaml')).file;
    expect(fleet.deployments.map((d) => [d.name, d.replicas, d.accelerator])).toEqual([
      ['kiosk-small', 50, 'any'],
      ['gateway-medium', 3, 'preferred'],
      ['hq-large', 1, 'required'],
    ]);
    expect(fleet.routing?.cloudFallback).toMatchObject({ enabled: true, apiKeyEnv: 'OPENAI_API_KEY' });
  });

  it('fills defaults and writes back what it reads', () => {
    const { file } = parseFleetFile(`${HEAD}${MODEL}deployments:\n  - name: chat\n    model: tiny\n    replicas: 2\nrouting: {}\n`);
    expect(file.deployments[0]).toEqual({ name: 'chat', model: 'tiny', replicas: 2, labelSelector: {}, pinnedDeviceIds: [], contextSize: null, parallel: 1, accelerator: 'any' });
    expect(file.routing).toEqual(DEFAULT_ROUTING);
    expect(parseFleetFile(writeFleetFile(file, 'a header\nof two lines')).file).toEqual(file);
    expect(writeFleetFile(file, 'a header')).toMatch(/^# a header\napiVersion: flotilla\/v1\n/);
  });

  it('accepts JSON (it is YAML) and sizes with units', () => {
    const json = JSON.stringify({ apiVersion: 'flotilla/v1', kind: 'Fleet', models: [], deployments: [] });
    expect(parseFleetFile(json).file.models).toEqual([]);
    expect([parseByteSize('512MiB'), parseByteSize('2.4 GB'), parseByteSize('10'), parseByteSize('1.5 parsecs')]).toEqual([536_870_912, 2_400_000_000, 10, undefined]);
  });

  it('names the line and column of YAML syntax errors', () => {
    expect(issuesOf(`${HEAD}models: [\n  {name: a,\n`)[0]).toMatchObject({ line: 5, column: 1 });
    expect(issuesOf(`${HEAD}kind: Fleet\n`)).toEqual([{ line: 3, column: 1, path: '', message: 'Map keys must be unique' }]);
    expect(issuesOf('')).toEqual([{ line: 1, column: 1, path: '', message: 'the fleet file is empty' }]);
  });

  it('names the line, column and path of every schema problem', () => {
    const text = `${HEAD}${MODEL.replace('sizeBytes: 1MiB', 'sizeBytes: lots').replace('tier: small', 'tier: tiny')}deployments:
  - name: chat
    model: tiny
    replicas: -1
    colour: blue
  - name: chat
    model: tiny
    replicas: 1
`;
    const issues = issuesOf(text);
    expect(issues).toEqual([
      { line: 7, column: 16, path: 'models[0].sizeBytes', message: expect.stringMatching(/^expected a size in bytes/) },
      { line: 11, column: 11, path: 'models[0].tier', message: expect.stringMatching(/^Invalid option: expected one of "small"\|"medium"\|"large"/) },
      { line: 15, column: 15, path: 'deployments[0].replicas', message: expect.stringMatching(/>=0/) },
      { line: 13, column: 5, path: 'deployments[0]', message: 'Unrecognized key: "colour"' },
      { line: 17, column: 11, path: 'deployments[1].name', message: 'deployment chat is declared twice (first at index 0)' },
    ]);
    expect(new FleetFileError(issues).message.split('\n')[0]).toBe('line 7, column 16: models[0].sizeBytes: expected a size in bytes, e.g. 524288000 or "500MiB" (units: kB MB GB TB KiB MiB GiB TiB)');
  });

  it('points a missing field at the map that lacks it, and checks apiVersion and kind', () => {
    expect(issuesOf(`${HEAD}deployments:\n  - name: chat\n    replicas: 1\n`)).toEqual([
      { line: 4, column: 5, path: 'deployments[0].model', message: expect.stringMatching(/expected string, received undefined/) },
    ]);
    expect(issuesOf('apiVersion: v2\nkind: Fleet\n')).toEqual([{ line: 1, column: 13, path: 'apiVersion', message: 'expected apiVersion: flotilla/v1' }]);
    expect(issuesOf('- just\n- a list\n')[0]).toMatchObject({ line: 1, column: 1, path: '' });
  });

  it('refuses an enabled cloud fallback without an endpoint, and secrets where a variable name belongs', () => {
    const issues = issuesOf(`${HEAD}routing:\n  cloudFallback:\n    enabled: true\n    apiKeyEnv: sk-live-123\n`);
    expect(issues.map((i) => [i.line, i.path, i.message])).toEqual([
      [6, 'routing.cloudFallback.apiKeyEnv', 'expected an environment variable name such as OPENAI_API_KEY'],
      [5, 'routing.cloudFallback', 'an enabled cloud fallback needs baseUrl and model'],
    ]);
  });
});

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runCli, type CliIo } from '../../src/cli.js';
import { DeploymentSchema, FleetApplyResultSchema, FleetExportSchema, FleetFileErrorDetailsSchema, RoutingSchema } from '@flotilla/protocol';
import { apiError, apiOk } from '../support/contract.js';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { adminToken, apiKeyWithRole } from '../scheduler/support.js';

const examplePath = (name: string) => fileURLToPath(new URL(`../../../../examples/fleet/${name}`, import.meta.url));

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** The CLI in-process, with its output captured. */
async function cli(argv: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = {
    out: (s) => (out += s),
    err: (s) => (err += s),
    readFile: (p) => readFile(p, 'utf8'),
    writeFile: (p, s) => writeFile(p, s, 'utf8'),
  };
  const code = await runCli(argv, env, io);
  return { code, out, err };
}

describeBackends('fleet file apply and export', (backend) => {
  let t: TestControlPlane;
  let token: string;
  let dir: string;
  const apply = (yaml: string, extra: Record<string, unknown> = {}) => apiOk(FleetApplyResultSchema, t.cp, '/api/v1/fleet/apply', { token, body: { yaml, ...extra } });
  const refused = (yaml: string, extra: Record<string, unknown> = {}, as = token) => apiError(t.cp, '/api/v1/fleet/apply', { token: as, body: { yaml, ...extra } });
  const exported = async () => {
    const res = await fetch(`${t.cp.url}/api/v1/fleet/export`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.headers.get('content-type')).toMatch(/^application\/yaml/);
    return FleetExportSchema.parse(await res.text());
  };

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    token = await adminToken(t.cp, t.isolated.dataDir);
    dir = await mkdtemp(join(tmpdir(), 'flotilla-fleet-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    await t?.dispose();
  });

  it('dry-runs, applies, and applying the same file again changes nothing and says so', async () => {
    const yaml = await readFile(examplePath('single-device.yaml'), 'utf8');
    const dry = await apply(yaml, { dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, changed: true, summary: '6 to create' });
    expect(await t.cp.database.prisma.model.count()).toBe(0);

    const first = await apply(yaml);
    expect(first.body).toMatchObject({ dryRun: false, changed: true, summary: '6 created' });
    expect(first.body.changes.map((c) => `${c.kind}:${c.name}:${c.action}`)).toEqual([
      'model:qwen2.5-0.5b-instruct-q4_k_m:create',
      'model:phi-4-mini-instruct-q4_k_m:create',
      'deployment:small:create',
      'deployment:medium:create',
      'routing:routing:create',
      'metadata:metadata:create',
    ]);
    const again = await apply(yaml);
    expect(again.body).toEqual({ dryRun: false, changed: false, summary: 'no changes: everything (6 items) already matches the file', changes: expect.any(Array) });
    expect(again.body.changes.every((c) => c.action === 'unchanged')).toBe(true);
    expect(await t.cp.database.prisma.auditEvent.count({ where: { action: 'fleet.apply' } })).toBe(1);

    const routing = await apiOk(RoutingSchema, t.cp, '/api/v1/fleet/routing', { token });
    expect(routing.body).toMatchObject({ defaultTier: 'small', tiers: { medium: ['phi-4-mini-instruct-q4_k_m'] }, auto: { toolsMinTier: 'medium' } });
    const deployment = await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments/small', { token });
    expect(deployment.body).toMatchObject({ model: 'qwen2.5-0.5b-instruct-q4_k_m', contextSize: 4096, parallel: 4 });
  });

  it('exports YAML that round-trips through apply unchanged', async () => {
    const text = await exported();
    expect(text).toMatch(/^# Flotilla fleet file, exported /);
    const doc = parse(text) as { apiVersion: string; models: { name: string; sha256: string }[]; deployments: { name: string }[] };
    expect(doc.apiVersion).toBe('flotilla/v1');
    expect(doc.models.map((m) => m.name)).toEqual(['phi-4-mini-instruct-q4_k_m', 'qwen2.5-0.5b-instruct-q4_k_m']);
    const back = await apply(text);
    expect(back.body.changed).toBe(false);
    const withoutHeader = (s: string) => s.replace(/^#.*\n/gm, '');
    expect(withoutHeader(await exported())).toBe(withoutHeader(text));
  });

  it('reports updates field by field, prunes on request, and leaves routing alone when the file has none', async () => {
    const yaml = await readFile(examplePath('edge-fleet.yaml'), 'utf8');
    const dry = await apply(yaml, { dryRun: true, prune: true });
    const byName = Object.fromEntries(dry.body.changes.map((c) => [`${c.kind}:${c.name}`, c]));
    expect(byName['model:qwen2.5-0.5b-instruct-q4_k_m']?.action).toBe('unchanged');
    expect(byName['model:qwen2.5-7b-instruct-q8_0']?.action).toBe('create');
    expect(byName['deployment:small']?.action).toBe('delete');
    expect(byName['routing:routing']).toEqual({ kind: 'routing', name: 'routing', action: 'update' });
    const applied = await apply(yaml, { prune: true });
    expect(applied.body.summary).toBe('4 created, 2 updated, 2 deleted, 2 unchanged');
    expect((await apiError(t.cp, '/api/v1/deployments/small', { token })).status).toBe(404);

    // Scale one deployment in the file, drop the routing block: only that deployment changes.
    const edited = yaml.replace('replicas: 3', 'replicas: 4').replace(/\nrouting:[\s\S]*$/, '\n');
    const changed = await apply(edited);
    expect(changed.body.changes.filter((c) => c.action !== 'unchanged')).toEqual([{ kind: 'deployment', name: 'gateway-medium', action: 'update', fields: ['replicas'] }]);
    const routing = await apiOk(RoutingSchema, t.cp, '/api/v1/fleet/routing', { token });
    expect(routing.body.cloudFallback.enabled).toBe(true);
  });

  it('refuses invalid files with line numbers, unknown models included, and changes nothing', async () => {
    const before = await exported();
    const broken = await refused('apiVersion: flotilla/v1\nkind: Fleet\nmodels:\n  - name: [unclosed\n');
    expect(broken.status).toBe(400);
    expect(broken.body.error.code).toBe('INVALID_REQUEST');
    expect(broken.body.error.message).toMatch(/^invalid fleet file: line \d+, column \d+: /);
    const unknownModel = await refused('apiVersion: flotilla/v1\nkind: Fleet\ndeployments:\n  - name: x\n    model: not-there\n    replicas: 1\n');
    expect(unknownModel.status).toBe(400);
    expect(FleetFileErrorDetailsSchema.parse(unknownModel.body.error.details).issues).toEqual([
      { line: 5, column: 12, path: 'deployments[0].model', message: 'model not-there is neither in this file nor in the catalog' },
    ]);
    const badSchema = await refused('apiVersion: flotilla/v1\nkind: Fleet\ndeployments:\n  - name: x\n    model: qwen2.5-7b-instruct-q8_0\n    replicas: many\n');
    expect(badSchema.body.error.message).toMatch(/^invalid fleet file: line 6, column 15: deployments\[0\]\.replicas: /);
    expect((await refused('')).body.error.message).toBe('yaml: the fleet file is empty');
    expect(await exported()).toSatisfy((now: string) => now.replace(/^#.*\n/gm, '') === before.replace(/^#.*\n/gm, ''));
  });

  it('lets viewers export but not apply', async () => {
    const viewer = await apiKeyWithRole(t.cp, 'viewer');
    expect((await refused('apiVersion: flotilla/v1\nkind: Fleet\n', {}, viewer)).status).toBe(403);
    expect((await fetch(`${t.cp.url}/api/v1/fleet/export`, { headers: { authorization: `Bearer ${viewer}` } })).status).toBe(200);
  });

  it('works from the command line: flotilla apply -f and flotilla export', async () => {
    const env = { FLOTILLA_SERVER: t.cp.url, FLOTILLA_TOKEN: token };
    const out = join(dir, 'exported.yaml');
    const exportRun = await cli(['export', '-o', out], env);
    expect(exportRun).toMatchObject({ code: 0, err: `wrote ${out}\n` });
    const again = await cli(['apply', '-f', out], env);
    expect(again).toMatchObject({ code: 0, out: 'no changes: everything (8 items) already matches the file\n' });

    const edited = join(dir, 'edited.yaml');
    await writeFile(edited, (await readFile(out, 'utf8')).replace('replicas: 4', 'replicas: 2'));
    const dry = await cli(['apply', '-f', edited, '--dry-run', '--server', t.cp.url, '--token', token], {});
    expect(dry).toMatchObject({ code: 0, out: 'dry run, nothing changed: 1 to update, 7 unchanged\n  ~ deployment gateway-medium (replicas)\n' });
    expect((await cli(['apply', '-f', edited], env)).out).toBe('1 updated, 7 unchanged\n  ~ deployment gateway-medium (replicas)\n');

    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'apiVersion: flotilla/v1\nkind: Fleet\ndeployments:\n  - name: x\n    model: nope\n    replicas: 1\n');
    expect(await cli(['apply', '-f', bad], env)).toEqual({ code: 1, out: '', err: `${bad}:5:12: deployments[0].model: model nope is neither in this file nor in the catalog\n` });
    expect((await cli(['apply', '-f', bad], { FLOTILLA_SERVER: t.cp.url })).code).toBe(2);
    expect((await cli(['apply'], env)).err).toMatch(/^flotilla: apply needs -f/);
    expect((await cli(['export'], { ...env, FLOTILLA_TOKEN: 'flt_ses_wrong' })).err).toMatch(/^flotilla: 401 UNAUTHORIZED /);
    const closed = await closedPort();
    expect((await cli(['export'], { FLOTILLA_SERVER: `http://127.0.0.1:${closed}`, FLOTILLA_TOKEN: token })).err).toBe(
      `flotilla: cannot reach the control plane at http://127.0.0.1:${closed} (ECONNREFUSED); set --server or FLOTILLA_SERVER\n`,
    );
  });
});

import { afterAll, beforeAll, expect, it } from 'vitest';
import { DeploymentPageSchema, DeploymentSchema, ModelPageSchema, ModelSchema } from '@flotilla/protocol';
import { apiError, apiOk } from '../support/contract.js';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { MiB, apiKeyWithRole, modelBody } from '../scheduler/support.js';

describeBackends('model catalog and deployments REST API', (backend) => {
  let t: TestControlPlane;
  let viewer: string;
  let operator: string;

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    viewer = await apiKeyWithRole(t.cp, 'viewer');
    operator = await apiKeyWithRole(t.cp, 'operator');
  });
  afterAll(() => t?.dispose());

  it('lets operators add models (sizes with units), viewers only read', async () => {
    const refused = await apiError(t.cp, '/api/v1/models', { token: viewer, body: modelBody('m-alpha') });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('FORBIDDEN');
    const created = await apiOk(ModelSchema, t.cp, '/api/v1/models', { token: operator, body: modelBody('m-alpha', { memoryBytes: '1.5GiB', sizeBytes: '500MB' }) });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'm-alpha', sizeBytes: 500_000_000, memoryBytes: 1.5 * 1024 ** 3, tier: 'small', quantization: 'Q8_0' });
    const byName = await apiOk(ModelSchema, t.cp, '/api/v1/models/m-alpha', { token: viewer });
    const byId = await apiOk(ModelSchema, t.cp, `/api/v1/models/${created.body.id}`, { token: viewer });
    expect(byName.body).toEqual(byId.body);
    expect((await apiError(t.cp, '/api/v1/models')).status).toBe(401);
    const audit = await t.cp.database.prisma.auditEvent.findMany({ where: { action: 'model.create' } });
    expect(audit).toEqual([expect.objectContaining({ actor: expect.stringMatching(/^api-key:/), target: `model:${created.body.id}`, details: { name: 'm-alpha', tier: 'small' } })]);
  });

  it('refuses invalid models with the field and the reason', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [modelBody('m-bad', { sha256: 'ABC' }), /^sha256: expected 64 lowercase hex characters$/],
      [modelBody('m-bad', { sourceUrl: 'ftp://x/y.gguf' }), /^sourceUrl: /],
      [modelBody('m-bad', { sizeBytes: 'huge' }), /^sizeBytes: expected a size in bytes/],
      [modelBody('m-bad', { tier: 'xl' }), /^tier: /],
      [modelBody('m bad'), /^name: expected a model name/],
      [modelBody('m-bad', { contextLength: 10 }), /^contextLength: /],
      [{ ...modelBody('m-bad'), colour: 'red' }, /Unrecognized key/],
    ];
    for (const [body, message] of cases) {
      const res = await apiError(t.cp, '/api/v1/models', { token: operator, body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.code).toBe('INVALID_REQUEST');
      expect(res.body.error.message).toMatch(message);
    }
    const duplicate = await apiError(t.cp, '/api/v1/models', { token: operator, body: modelBody('m-alpha') });
    expect(duplicate.status).toBe(409);
    expect(duplicate.body.error.message).toBe('a model named m-alpha already exists');
    expect((await apiError(t.cp, '/api/v1/models/nope', { token: viewer })).body.error).toMatchObject({ code: 'NOT_FOUND', message: 'model nope not found' });
  });

  it('pages and filters the list, and updates models', async () => {
    for (const name of ['m-beta', 'm-gamma']) await apiOk(ModelSchema, t.cp, '/api/v1/models', { token: operator, body: modelBody(name, { tier: 'medium' }) });
    const first = await apiOk(ModelPageSchema, t.cp, '/api/v1/models?limit=2', { token: viewer });
    expect(first.body.items.map((m) => m.name)).toEqual(['m-alpha', 'm-beta']);
    expect(first.body.nextCursor).toEqual(expect.any(String));
    const second = await apiOk(ModelPageSchema, t.cp, `/api/v1/models?limit=2&cursor=${first.body.nextCursor}`, { token: viewer });
    expect(second.body).toEqual({ items: [expect.objectContaining({ name: 'm-gamma' })], nextCursor: null });
    const medium = await apiOk(ModelPageSchema, t.cp, '/api/v1/models?tier=medium', { token: viewer });
    expect(medium.body.items.map((m) => m.name)).toEqual(['m-beta', 'm-gamma']);
    expect((await apiError(t.cp, '/api/v1/models?limit=0', { token: viewer })).status).toBe(400);
    const patched = await apiOk(ModelSchema, t.cp, '/api/v1/models/m-gamma', { token: operator, method: 'PATCH', body: { memoryBytes: 512 * MiB, tier: 'large' } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ memoryBytes: 512 * MiB, tier: 'large' });
    expect((await apiError(t.cp, '/api/v1/models/m-gamma', { token: operator, method: 'PATCH', body: {} })).body.error.message).toBe('nothing to change');
  });

  it('manages deployments: validation, scale, rollout, and a model in use cannot be deleted', async () => {
    const unknown = await apiError(t.cp, '/api/v1/deployments', { token: operator, body: { name: 'web', model: 'nope', replicas: 1 } });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.message).toMatch(/^model nope is not in the catalog/);
    for (const body of [
      { name: 'web', model: 'm-alpha', replicas: -1 },
      { name: 'Web!', model: 'm-alpha', replicas: 1 },
      { name: 'web', model: 'm-alpha', replicas: 1, pinnedDeviceIds: ['NOT A DEVICE'] },
      { name: 'web', model: 'm-alpha', replicas: 1, accelerator: 'tpu' },
    ]) {
      expect((await apiError(t.cp, '/api/v1/deployments', { token: operator, body })).status, JSON.stringify(body)).toBe(400);
    }
    const created = await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments', {
      token: operator,
      body: { name: 'web', model: 'm-alpha', replicas: 2, labelSelector: { zone: 'eu' } },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ model: 'm-alpha', replicas: 2, labelSelector: { zone: 'eu' }, accelerator: 'any' });
    expect((await apiError(t.cp, '/api/v1/deployments', { token: viewer, body: { name: 'x', model: 'm-alpha', replicas: 1 } })).status).toBe(403);
    expect((await apiError(t.cp, '/api/v1/deployments', { token: operator, body: { name: 'web', model: 'm-alpha', replicas: 1 } })).status).toBe(409);
    const scaled = await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments/web/scale', { token: operator, body: { replicas: 5 } });
    expect(scaled.body.replicas).toBe(5);
    const rolled = await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments/web/rollout', { token: operator, body: { model: 'm-beta' } });
    expect(rolled.body.model).toBe('m-beta');
    const list = await apiOk(DeploymentPageSchema, t.cp, '/api/v1/deployments', { token: viewer });
    expect(list.body.items.map((d) => d.name)).toEqual(['web']);

    const inUse = await apiError(t.cp, '/api/v1/models/m-beta', { token: operator, method: 'DELETE' });
    expect(inUse.status).toBe(409);
    expect(inUse.body.error).toMatchObject({ code: 'CONFLICT', message: 'model m-beta is used by deployments: web; delete them or change their model first' });
    expect((await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments/web', { token: operator, method: 'DELETE' })).status).toBe(200);
    expect((await apiOk(ModelSchema, t.cp, '/api/v1/models/m-beta', { token: operator, method: 'DELETE' })).status).toBe(200);
    expect((await apiError(t.cp, '/api/v1/models/m-beta', { token: viewer })).status).toBe(404);

    const actions = (await t.cp.database.prisma.auditEvent.findMany({ where: { action: { startsWith: 'deployment.' } }, orderBy: { at: 'asc' } })).map((a) => a.action);
    expect(actions).toEqual(['deployment.create', 'deployment.scale', 'deployment.rollout', 'deployment.delete']);
    const rollout = await t.cp.database.prisma.auditEvent.findFirstOrThrow({ where: { action: 'deployment.rollout' } });
    expect(rollout.details).toMatchObject({ model: { from: 'm-alpha', to: 'm-beta' } });
  });
});

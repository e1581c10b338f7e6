import { ApiErrorBodySchema, AuditPageSchema, OpenApiDocumentSchema } from '@flotilla/protocol';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RouteCatalog } from '../../src/platform/openapi/route-catalog.js';
import { api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { enrollDevice, loginAdmin, loginAs } from '../observability/helpers.js';

interface Operation {
  operationId: string;
  summary: string;
  security: Record<string, string[]>[];
  'x-required-role': string;
  'x-undocumented'?: boolean;
  parameters?: { name: string; in: string; required: boolean; schema: Record<string, unknown> }[];
  requestBody?: { content: Record<string, { schema: { properties?: Record<string, unknown>; required?: string[] } }> };
  responses: Record<string, unknown>;
  tags?: string[];
}
interface OpenApi {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
}

const METRICS_TOKEN = 'metrics-token-for-tests-0123456789';
/** Non-GET routes a viewer may call: they change only the caller's own session. */
const VIEWER_MAY = new Set(['POST /api/v1/auth/logout']);

const toOpenApiPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\*$/, '{wildcard}');

describeBackends('REST API surface', (backend) => {
  let t: TestControlPlane;
  let admin: string;

  beforeAll(async () => {
    t = await startTestControlPlane(backend, {
      FLOTILLA_METRICS_TOKEN: METRICS_TOKEN,
      FLOTILLA_RATE_LIMIT_LOGIN_PER_IP: '12',
      FLOTILLA_RATE_LIMIT_LOGIN_FAILURES_PER_PAIR: '3',
      FLOTILLA_RATE_LIMIT_ENROLL_PER_TOKEN: '2',
    });
    admin = await loginAdmin(t);
  });
  afterAll(() => t?.dispose());

  it('serves an OpenAPI 3.1 document with every route Fastify serves, its role and its zod schemas', async () => {
    const res = await api<OpenApi>(t.cp, '/api/v1/openapi.json');
    expect(res.status).toBe(200);
    OpenApiDocumentSchema.parse(res.body);
    const doc = res.body;
    expect(doc.openapi).toBe('3.1.0');
    const routes = t.cp.app.get(RouteCatalog).list();
    expect(routes.length).toBeGreaterThan(10);
    const missing = routes.filter((r) => !doc.paths[toOpenApiPath(r.url)]?.[r.method.toLowerCase()]).map((r) => `${r.method} ${r.url}`);
    expect(missing).toEqual([]);
    // And nothing documented that is not served.
    const served = new Set(routes.map((r) => `${r.method.toLowerCase()} ${toOpenApiPath(r.url)}`));
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`));
    expect(documented.filter((op) => !served.has(op))).toEqual([]);
    const ids = Object.values(doc.paths).flatMap((ops) => Object.values(ops).map((o) => o.operationId));
    expect(new Set(ids).size).toBe(ids.length);

    const login = doc.paths['/api/v1/auth/login']?.post;
    expect(login).toMatchObject({ 'x-required-role': 'public', security: [] });
    expect(login?.requestBody?.content['application/json']?.schema).toMatchObject({ required: ['email', 'password'], additionalProperties: false });
    expect(Object.keys(login?.responses ?? {})).toEqual(expect.arrayContaining(['200', '400', '429']));
    expect(doc.paths['/api/v1/devices']?.get).toMatchObject({ 'x-required-role': 'viewer', security: [{ bearer: [] }] });
    expect(doc.paths['/api/v1/enrollment-tokens']?.post?.['x-required-role']).toBe('operator');
    expect(doc.paths['/api/v1/audit']?.get?.['x-required-role']).toBe('admin');
    const alerts = doc.paths['/api/v1/alerts']?.get;
    expect(alerts?.parameters).toContainEqual(expect.objectContaining({ name: 'state', in: 'query', required: false, schema: { type: 'string', enum: ['open', 'resolved'] } }));
    expect(alerts?.parameters).toContainEqual(expect.objectContaining({ name: 'limit', schema: expect.objectContaining({ default: 100, maximum: 500 }) }));
    expect(doc.paths['/api/v1/events/stream']?.get).toMatchObject({ 'x-required-role': 'viewer', security: [{ bearer: [] }, { queryToken: [] }] });
    expect(doc.paths['/api/v1/fleet-health']?.get?.responses['200']).toMatchObject({
      content: { 'application/json': { schema: { properties: { status: { enum: ['healthy', 'degraded', 'unhealthy'] }, evaluatedAt: { type: 'string', format: 'date-time' } } } } },
    });
    for (const ops of Object.values(doc.paths)) for (const op of Object.values(ops)) expect(Object.keys(op.responses).length).toBeGreaterThan(0);
    // [issue 9] one owner for /api/v1/fleet: the fleet file (apply, export, routing); fleet health lives elsewhere
    const fleetPaths = Object.keys(doc.paths).filter((path) => path === '/api/v1/fleet' || path.startsWith('/api/v1/fleet/'));
    expect(fleetPaths.sort()).toEqual(['/api/v1/fleet/apply', '/api/v1/fleet/export', '/api/v1/fleet/routing']);
    for (const path of fleetPaths) for (const op of Object.values(doc.paths[path] ?? {})) expect(op.tags).toEqual(['fleet']);
  });

  it('documents every identity and devices route with its request and response schemas', async () => {
    const doc = (await api<OpenApi>(t.cp, '/api/v1/openapi.json')).body;
    const owners = /^(auth|users|enrollment|auditLog|devices)[A-Z]/;
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops)
        .filter(([, op]) => owners.test(op.operationId))
        .map(([method, op]) => ({ where: `${method.toUpperCase()} ${path}`, method, op })),
    );
    expect(operations.length).toBeGreaterThanOrEqual(19);
    const gaps: string[] = [];
    for (const { where, method, op } of operations) {
      if ((op as Operation & { 'x-undocumented'?: boolean })['x-undocumented']) gaps.push(`${where}: no @ApiDoc`);
      const [status, success] = Object.entries(op.responses).find(([code]) => code.startsWith('2')) ?? [];
      const content = (success as { content?: Record<string, { schema: Record<string, unknown> }> } | undefined)?.content;
      const schema = content?.['application/json']?.schema;
      if (status !== '204' && (!schema || Object.keys(schema).length === 0)) gaps.push(`${where}: no response schema`);
      const path = where.slice(where.indexOf(' ') + 1);
      for (const name of path.match(/\{([^}]+)\}/g) ?? []) {
        const param = op.parameters?.find((p) => p.in === 'path' && `{${p.name}}` === name);
        if (!param?.schema.description && !param?.schema.pattern) gaps.push(`${where}: path parameter ${name} undescribed`);
      }
      // Every write takes a schema'd body except the bodiless actions (revoke, logout).
      const bodiless = /\/(revoke|logout)$/.test(path);
      if ((method === 'post' || method === 'patch') && !bodiless && !op.requestBody) gaps.push(`${where}: no request schema`);
      if (op.responses['401'] === undefined && op['x-required-role'] !== 'public') gaps.push(`${where}: no 401`);
    }
    expect(gaps).toEqual([]);
  });

  it('documents the observability, gateway and platform routes with request and response schemas, auth and error bodies', async () => {
    const doc = (await api<OpenApi>(t.cp, '/api/v1/openapi.json')).body;
    const routes: [string, string, number][] = [
      ['get', '/api/v1/alerts', 200],
      ['get', '/api/v1/alerts/rules', 200],
      ['get', '/api/v1/fleet-health', 200],
      ['get', '/api/v1/recommendations', 200],
      ['get', '/api/v1/usage', 200],
      ['get', '/api/v1/events/stream', 200],
      ['get', '/metrics', 200],
      ['get', '/api/v1/gateway/stats', 200],
      ['get', '/api/v1/gateway/routing', 200],
      ['get', '/api/v1/requests/{id}', 200],
      ['get', '/v1/models', 200],
      ['post', '/v1/chat/completions', 200],
      ['get', '/healthz', 200],
      ['get', '/readyz', 200],
      ['get', '/api/v1/openapi.json', 200],
    ];
    const lacking: string[] = [];
    for (const [method, path, status] of routes) {
      const op = doc.paths[path]?.[method];
      const success = op?.responses[String(status)] as { content?: Record<string, { schema?: Record<string, unknown> }> } | undefined;
      const schemas = Object.values(success?.content ?? {}).map((c) => c.schema ?? {});
      // A documented response has a type or a structure, not the `{}` an undocumented route gets.
      if (!op || op['x-undocumented'] || schemas.length === 0 || schemas.some((schema) => Object.keys(schema).length === 0)) lacking.push(`${method} ${path}`);
    }
    expect(lacking).toEqual([]);

    const chat = doc.paths['/v1/chat/completions']?.post;
    expect(chat?.security).toEqual([{ gatewayKey: [] }]);
    expect(chat?.requestBody?.content['application/json']?.schema).toMatchObject({ required: expect.arrayContaining(['model', 'messages']) });
    const chatOk = chat?.responses['200'] as { content: Record<string, { schema: { properties: Record<string, unknown> } }> };
    expect(chatOk.content['application/json']?.schema.properties.object).toEqual({ type: 'string', const: 'chat.completion' });
    expect(chatOk.content['text/event-stream']?.schema.properties.object).toEqual({ type: 'string', const: 'chat.completion.chunk' });
    // OpenAI's error shape on /v1, not the control plane's shared one.
    for (const status of ['400', '401', '403', '404', '413', '429', '503']) {
      expect(chat?.responses[status], status).toMatchObject({
        content: { 'application/json': { schema: { properties: { error: { required: ['message', 'type', 'param', 'code'] } } } } },
      });
    }
    expect(doc.paths['/v1/models']?.get).toMatchObject({ security: [{ gatewayKey: [] }], responses: { '401': expect.anything() } });
    expect(doc.paths['/api/v1/alerts']?.get?.responses['200']).toMatchObject({
      content: { 'application/json': { schema: { properties: { items: { items: { properties: { openedAt: { type: 'string', format: 'date-time' } } } } } } } },
    });
    expect(doc.paths['/api/v1/events/stream']?.get?.responses['200']).toMatchObject({
      content: { 'text/event-stream': { schema: { oneOf: expect.arrayContaining([expect.objectContaining({ required: ['id', 'type', 'data', 'at'] })]) } } },
    });
    expect(doc.paths['/readyz']?.get?.responses).toHaveProperty('503');
    expect(doc.paths['/api/v1/gateway/stats']?.get?.['x-required-role']).toBe('viewer');
  });

  it('lists the audit log to admins, newest first and page by page', async () => {
    await enrollDevice(t.cp, admin, 'audited');
    const res = await api(t.cp, '/api/v1/audit?limit=1', { token: admin });
    expect(res.status).toBe(200);
    const first = AuditPageSchema.parse(res.body);
    expect(first.items).toHaveLength(1);
    expect(first.items[0]?.action).toBe('device.enroll');
    expect(first.nextCursor).not.toBeNull();
    const next = AuditPageSchema.parse((await api(t.cp, `/api/v1/audit?limit=1&cursor=${first.nextCursor}`, { token: admin })).body);
    expect(next.items[0]).toMatchObject({ action: 'enrollment-token.create', actor: expect.stringMatching(/^user:/) });
    const byPrefix = AuditPageSchema.parse((await api(t.cp, '/api/v1/audit?action=enrollment-token.', { token: admin })).body);
    expect(byPrefix.items.map((i) => i.action)).toEqual(['enrollment-token.create']);
    const bad = await api(t.cp, '/api/v1/audit?since=yesterday', { token: admin });
    expect(bad.status).toBe(400);
    expect(ApiErrorBodySchema.parse(bad.body).error.message).toMatch(/^since: /);
    const viewer = await loginAs(t.cp, 'viewer');
    expect((await api(t.cp, '/api/v1/audit', { token: viewer })).status).toBe(403);
  });

  it('lets a viewer read but change nothing: every non-GET route refuses a viewer session', async () => {
    const viewer = await loginAs(t.cp, 'viewer');
    expect((await api(t.cp, '/api/v1/devices', { token: viewer })).status).toBe(200);
    expect((await api(t.cp, '/api/v1/fleet-health', { token: viewer })).status).toBe(200);
    const doc = (await api<OpenApi>(t.cp, '/api/v1/openapi.json')).body;
    const auditBefore = await t.cp.database.prisma.auditEvent.count();
    const placeholder = '0190a0b0-0000-7000-8000-000000000000';
    const checked: string[] = [];
    for (const route of t.cp.app.get(RouteCatalog).list()) {
      if (route.method === 'GET' || VIEWER_MAY.has(`${route.method} ${route.url}`)) continue;
      const op = doc.paths[toOpenApiPath(route.url)]?.[route.method.toLowerCase()];
      const path = route.url.replace(/:[A-Za-z0-9_]+/g, placeholder).replace(/\*$/, 'x');
      const res = await api<{ error?: { code: string } }>(t.cp, path, { method: route.method, token: viewer, body: {} });
      const where = `${route.method} ${route.url} -> ${res.status}`;
      if (op?.['x-required-role'] === 'public') {
        // Public routes check their own credentials (enrollment token, gateway key, password): never a success here.
        expect(res.status, where).toBeGreaterThanOrEqual(400);
        expect(res.status, where).toBeLessThan(500);
      } else {
        expect(res.status, where).toBe(403);
        expect(res.body.error?.code, where).toBe('FORBIDDEN');
      }
      checked.push(where);
    }
    expect(checked.length).toBeGreaterThanOrEqual(3);
    expect(await t.cp.database.prisma.auditEvent.count()).toBe(auditBefore);
    // The one thing a viewer may change: its own session.
    expect((await api(t.cp, '/api/v1/auth/logout', { method: 'POST', token: viewer })).status).toBe(204);
    expect((await api(t.cp, '/api/v1/devices', { token: viewer })).status).toBe(401);
  });

  it('protects /metrics with FLOTILLA_METRICS_TOKEN when it is set', async () => {
    expect((await api(t.cp, '/metrics')).status).toBe(401);
    expect((await api(t.cp, '/metrics', { token: admin })).status).toBe(401);
    const ok = await api<string>(t.cp, '/metrics', { token: METRICS_TOKEN });
    expect(ok.status).toBe(200);
    expect(ok.body).toContain('# TYPE flotilla_devices gauge');
  });

  it('rate limits login failures per (address, account) and attempts per address, and enrollment per token, with 429 and Retry-After', async () => {
    const email = 'nobody@flotilla.test';
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await api(t.cp, '/api/v1/auth/login', { body: { email, password: 'wrong' } })).status);
    expect(statuses).toEqual([401, 401, 401, 429]);
    const limited = await api<{ error: { code: string; message: string } }>(t.cp, '/api/v1/auth/login', { body: { email: email.toUpperCase(), password: 'x' } });
    expect(limited.status).toBe(429);
    expect(limited.body.error.code).toBe('RATE_LIMITED');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(20);

    // Other accounts from the same address go on until the address' own bucket (12 per minute) is empty.
    let attempts = 0;
    let last = 0;
    while (attempts < 20 && last !== 429) {
      last = (await api(t.cp, '/api/v1/auth/login', { body: { email: `user${attempts}@flotilla.test`, password: 'wrong' } })).status;
      attempts++;
    }
    expect(last).toBe(429);
    expect(attempts).toBeLessThan(12);

    const token = 'flt_enr_not-a-real-token';
    const enroll = [];
    for (let i = 0; i < 3; i++) enroll.push(await api<{ error: { code: string } }>(t.cp, '/api/v1/enroll', { body: { token } }));
    expect(enroll.map((r) => r.status)).toEqual([401, 401, 429]);
    expect(Number(enroll[2]?.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });
});

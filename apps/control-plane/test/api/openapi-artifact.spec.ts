import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';

// The REST contract as a reviewed artifact: docs/openapi.json is what the control plane serves, committed so that its
// diff is read in review. `npm run openapi` writes it anew.
const committed = fileURLToPath(new URL('../../../../docs/openapi.json', import.meta.url));

type Operation = { requestBody?: unknown; responses: Record<string, { content?: Record<string, { schema?: Record<string, unknown> }> }>; 'x-undocumented'?: boolean };
type Document = { paths: Record<string, Record<string, Operation>> };

describeBackends('the committed OpenAPI document', (backend) => {
  let t: TestControlPlane;
  let served: Document;
  let text: string;
  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    served = (await api<Document>(t.cp, '/api/v1/openapi.json')).body;
    text = `${JSON.stringify(served, null, 2)}\n`;
    if (process.env.FLOTILLA_WRITE_OPENAPI === '1' && backend === 'pglite') writeFileSync(committed, text);
  });
  afterAll(() => t?.dispose());

  it('docs/openapi.json is the document the control plane serves', () => {
    expect(readFileSync(committed, 'utf8') === text, 'docs/openapi.json is stale: run `npm run openapi` and commit it').toBe(true);
  });

  it('gives every served route a response schema, and every write that takes a body a request schema', () => {
    const lacking: string[] = [];
    for (const [path, ops] of Object.entries(served.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const where = `${method.toUpperCase()} ${path}`;
        if (op['x-undocumented']) lacking.push(`${where}: no @ApiDoc`);
        const success = Object.entries(op.responses).filter(([code]) => code.startsWith('2') && code !== '204');
        if (success.length === 0 && op.responses['204'] === undefined) lacking.push(`${where}: no success response`);
        for (const [code, response] of success) {
          const schemas = Object.values(response.content ?? {}).map((c) => c.schema ?? {});
          if (schemas.length === 0 || schemas.some((schema) => Object.keys(schema).length === 0)) lacking.push(`${where}: ${code} without a schema`);
        }
        if (['post', 'put', 'patch'].includes(method) && op.requestBody === undefined && !BODILESS.has(where)) lacking.push(`${where}: no request schema`);
      }
    }
    expect(lacking).toEqual([]);
  });
});

/** Writes whose meaning is all in their path: they take no body, on purpose. */
const BODILESS = new Set<string>(['POST /api/v1/api-keys/{id}/revoke', 'POST /api/v1/auth/logout', 'POST /api/v1/devices/{id}/revoke', 'POST /api/v1/scheduler/run']);

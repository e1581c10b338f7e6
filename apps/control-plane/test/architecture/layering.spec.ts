import { describe, expect, it } from 'vitest';
import { checkLayering, describeReport, readSourceTree, srcDirOf, type LayeringReport } from './import-graph.js';

const tree = readSourceTree(srcDirOf(import.meta.url));
/** Each cycle as its sorted set of domains (where the search enters a cycle depends on the graph's order). */
const cycleSets = (report: LayeringReport) => report.cycles.map((cycle) => [...new Set(cycle)].sort().join(','));

describe('control-plane layering', () => {
  it('reads the source tree (every domain folder present)', () => {
    const tops = new Set([...tree.keys()].map((file) => file.split('/')[0]));
    for (const domain of ['app', 'platform', 'identity', 'devices', 'models', 'gateway', 'observability']) expect(tops).toContain(domain);
    expect(tree.size).toBeGreaterThan(100);
  });

  it('the tree imports only down the layers, with no cycle between domains', () => {
    expect(describeReport(checkLayering(tree))).toEqual([]);
  });

  it('fails on a planted reverse import (platform importing a domain)', () => {
    const planted = new Map(tree);
    planted.set('platform/common/planted.ts', "import { DevicesService } from '../../devices/inventory/devices.service.js';\nexport const x = DevicesService;\n");
    const report = checkLayering(planted);
    expect(report.violations).toEqual([
      { from: 'platform/common/planted.ts', to: 'devices/inventory/devices.service.ts', fromDomain: 'platform', toDomain: 'devices' },
    ]);
  });

  it('fails on an import of the composition root from a domain', () => {
    const planted = new Map(tree);
    planted.set('gateway/planted.ts', "import type { ControlPlaneConfig } from '../app/config.js';\nexport type X = ControlPlaneConfig;\n");
    // app imports gateway, so this is also a cycle
    expect(describeReport(checkLayering(planted))).toEqual(['gateway/planted.ts (gateway) imports app/config.ts (app)', 'domain cycle: app -> gateway -> app']);
  });

  it('fails on a planted cycle between domains (gateway <-> observability)', () => {
    const planted = new Map(tree);
    planted.set('gateway/planted-a.ts', "export { UsageService } from '../observability/usage/usage.service.js';\n");
    planted.set('observability/planted-b.ts', "export const load = () => import('../gateway/planted-a.js');\n");
    const report = checkLayering(planted);
    expect(cycleSets(report)).toContain('gateway,observability');
    expect(report.violations.map((edge) => edge.from).sort()).toEqual(['gateway/planted-a.ts', 'observability/planted-b.ts']);
  });

  it('reports a cycle through several domains as one cycle', () => {
    // devices -> identity and models -> devices are allowed; plant identity -> models: devices, identity and models
    // now reach each other (models -> devices -> identity -> models).
    const planted = new Map(tree);
    planted.set('identity/planted.ts', "import '../models/catalog/inputs.js';\n");
    const report = checkLayering(planted);
    expect(report.violations.map((edge) => edge.from)).toEqual(['identity/planted.ts']);
    expect(cycleSets(report).some((set) => set.includes('identity') && set.includes('models'))).toBe(true);
  });

  it('names a file outside every domain folder', () => {
    const planted = new Map(tree);
    planted.set('misc/loose.ts', 'export const x = 1;\n');
    expect(checkLayering(planted).unknown).toEqual(['misc/loose.ts']);
  });
});

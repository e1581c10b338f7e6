// Shared Vitest settings: resolve workspace libraries to their TypeScript sources.
export const sourceConditions = ['@flotilla/source', 'node', 'import', 'module', 'default'];

export function nodeProject(name, extra = {}) {
  return {
    resolve: { conditions: sourceConditions },
    ssr: { resolve: { conditions: sourceConditions, externalConditions: ['@flotilla/source'] } },
    test: {
      name,
      environment: 'node',
      include: ['src/**/*.spec.ts', 'test/**/*.spec.ts'],
      testTimeout: 60_000,
      hookTimeout: 120_000,
      pool: 'forks',
      ...extra,
    },
  };
}

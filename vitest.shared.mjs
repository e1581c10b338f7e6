// Shared Vitest settings: resolve workspace libraries to their TypeScript sources
// through the `@flotilla/source` export condition; everything else resolves as Node would.
export function nodeProject(name, extra = {}) {
  return {
    resolve: { conditions: ['@flotilla/source', 'module', 'node', 'development|production'] },
    ssr: { resolve: { conditions: ['@flotilla/source', 'module', 'node', 'development|production'] } },
    test: {
      name,
      environment: 'node',
      include: ['src/**/*.spec.ts', 'test/**/*.spec.ts'],
      testTimeout: 60_000,
      hookTimeout: 120_000,
      pool: 'forks',
      reporters: ['default', ['json', { outputFile: 'test-output/vitest.json' }]],
      ...extra,
    },
  };
}

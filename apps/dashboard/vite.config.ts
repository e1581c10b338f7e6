import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

const conditions = ['@flotilla/source', 'browser', 'import', 'module', 'default'];

export default defineConfig({
  root: import.meta.dirname,
  plugins: [react()],
  resolve: { conditions },
  build: { outDir: 'dist', emptyOutDir: true },
  test: {
    name: 'dashboard',
    environment: 'node',
    include: ['src/**/*.spec.ts', 'src/**/*.spec.tsx', 'test/**/*.spec.ts'],
    testTimeout: 60_000,
    reporters: ['default', ['json', { outputFile: 'test-output/vitest.json' }]],
  },
});

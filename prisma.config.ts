// Prisma 7 reads its settings from here. Migrations are applied by the control plane's own migrator
// (apps/control-plane/src/platform/database/migrator.ts), so only `prisma generate` (via prisma/generate.mjs) uses this file.
import { defineConfig } from 'prisma/config';

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  ...(process.env['DATABASE_URL'] ? { datasource: { url: process.env['DATABASE_URL'] } } : {}),
});

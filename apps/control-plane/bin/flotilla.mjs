#!/usr/bin/env node
// The `flotilla` CLI's entry, committed so that `npm install` links it (a bin pointing into dist/ does not exist at
// install time, so npm skipped it and `npx flotilla` went to the public registry). It only loads the build.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write(
    `flotilla: the CLI is not built yet (${cli} is missing): run npm start or npx nx build @flotilla/control-plane first\n`,
  );
  process.exit(1);
}
const { main } = await import(cli);
await main(process.argv.slice(2));

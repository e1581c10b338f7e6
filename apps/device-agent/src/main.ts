#!/usr/bin/env node
import { runCli } from './cli/cli.js';

runCli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Native handles (llama.cpp) can keep the loop alive after a clean shutdown.
    setTimeout(() => process.exit(code), 500).unref();
  },
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);

#!/usr/bin/env node
import { runSimCli, terminalLines } from './cli-main.js';

let interrupt: () => void = () => undefined;
const interrupted = new Promise<void>((done) => (interrupt = done));
let signals = 0;
const onSignal = (): void => {
  // First Ctrl-C: stop the fleet cleanly; second: leave at once.
  if (++signals > 1) process.exit(130);
  interrupt();
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
const lines = terminalLines();
process.exitCode = await runSimCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  ...(lines ? { lines } : {}),
  tty: process.stdout.isTTY === true,
  interrupted,
});
// Readline on a terminal keeps the loop alive after the fleet stopped.
process.stdin.destroy();

import type { ChildProcess } from 'node:child_process';

/** What an interrupted run must not leave behind: child processes (killed) and databases (dropped). */
const children = new Set<ChildProcess>();
const finalizers = new Set<() => Promise<void>>();

export function trackChild(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** Registers `fn` to run on interrupt; returns the function that unregisters it. */
export function onInterrupt(fn: () => Promise<void>): () => void {
  finalizers.add(fn);
  return () => finalizers.delete(fn);
}

let installed = false;

/** On SIGINT/SIGTERM (exit 130) or an uncaught exception (exit 1): SIGKILL every tracked child, run the finalizers (5 s at most). */
export function installInterruptCleanup(): void {
  if (installed) return;
  installed = true;
  const cleanUpAndExit = (code: number): void => {
    for (const c of children) c.kill('SIGKILL');
    const all = Promise.allSettled([...finalizers].map((f) => f()));
    const timeout = new Promise((done) => setTimeout(done, 5000).unref());
    Promise.race([all, timeout]).then(
      () => process.exit(code),
      () => process.exit(code),
    );
  };
  process.once('SIGINT', () => cleanUpAndExit(130));
  process.once('SIGTERM', () => cleanUpAndExit(130));
  // a throw in a simulator's timer would otherwise leave control planes and databases behind
  process.once('uncaughtException', (error) => {
    console.error(`!! uncaught: ${error.stack ?? error.message}`);
    cleanUpAndExit(1);
  });
}

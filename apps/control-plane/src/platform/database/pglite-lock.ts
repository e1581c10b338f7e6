import { readFile, rm, writeFile } from 'node:fs/promises';
import { DatabaseOpenError } from './errors.js';

export interface DirectoryLock {
  release(): Promise<void>;
}

/** Folders this process holds; a lock file naming our own pid but absent here is stale (e.g. pid 1 in a container). */
const heldHere = new Set<string>();

/**
 * Takes `<directory>.lock` holding our pid. PGlite has no lock of its own, and two processes writing one folder
 * corrupt it, so a live holder makes this fail with a clear message; a dead holder's lock is taken over.
 */
export async function acquireDirectoryLock(directory: string): Promise<DirectoryLock> {
  const file = `${directory}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      heldHere.add(directory);
      let released = false;
      return {
        async release() {
          if (released) return;
          released = true;
          heldHere.delete(directory);
          await rm(file, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(holder) && holder > 0 && isHeld(holder, directory)) {
      throw new DatabaseOpenError(
        `The embedded database ${directory} is in use by ${holder === process.pid ? 'this process' : `process ${holder}`} ` +
          `(lock file ${file}). Stop the other control plane, or use PostgreSQL (DATABASE_URL) to run several.`,
      );
    }
    await rm(file, { force: true });
  }
  throw new DatabaseOpenError(`Could not take the lock file ${directory}.lock`);
}

function isHeld(pid: number, directory: string): boolean {
  if (pid === process.pid) return heldHere.has(directory);
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

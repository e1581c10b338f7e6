import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint, type Linter } from 'eslint';
import { describe, expect, it } from 'vitest';

// The workspace's own lint rules, run the way `nx run-many -t lint` runs them: an app importing another app must fail.
const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Lints `code` as the file `filePath` would be. Type-aware rules need the file in its TypeScript project, so it is
 * written there for the duration (under a name no other file uses) and removed again.
 */
async function lintAs(filePath: string, code: string): Promise<Linter.LintMessage[]> {
  const path = join(root, filePath);
  if (existsSync(path)) throw new Error(`${filePath} exists: pick a name no file in the tree uses`);
  await writeFile(path, code);
  try {
    const eslint = new ESLint({ cwd: root });
    const [result] = await eslint.lintFiles([path]);
    const fatal = (result?.messages ?? []).filter((m) => m.fatal);
    if (fatal.length > 0) throw new Error(`lint could not parse ${filePath}: ${fatal.map((m) => m.message).join('; ')}`);
    return result?.messages ?? [];
  } finally {
    await rm(path, { force: true });
  }
}

async function lint(filePath: string, code: string): Promise<string[]> {
  return (await lintAs(filePath, code)).filter((m) => m.ruleId === '@nx/enforce-module-boundaries').map((m) => m.message);
}

describe('module boundaries', () => {
  it('refuses an import from one app into another', async () => {
    const messages = await lint('apps/device-agent/src/bad-import.ts', "import { startControlPlane } from '@flotilla/control-plane';\nexport const x = startControlPlane;\n");
    expect(messages.join('\n')).toMatch(/Imports of apps are forbidden/);
  });

  it('refuses an app import in the dashboard too', async () => {
    const messages = await lint('apps/dashboard/src/bad-import.ts', "import '@flotilla/device-agent';\n");
    expect(messages.join('\n')).toMatch(/Imports of apps are forbidden/);
  });

  it('refuses production code importing tools, but lets tests use them', async () => {
    const prod = await lint('apps/control-plane/src/bad-import.ts', "import { ensureModel } from '@flotilla/tools/models';\nexport const x = ensureModel;\n");
    expect(prod.join('\n')).toMatch(/scope:tools|can only depend on libs tagged/);
    const test = await lint('apps/control-plane/test/ok.spec.ts', "import { ensureModel } from '@flotilla/tools/models';\nexport const x = ensureModel;\n");
    expect(test).toEqual([]);
  });

  it('lets every app import the shared protocol', async () => {
    for (const app of ['control-plane', 'device-agent', 'dashboard']) {
      expect(await lint(`apps/${app}/src/ok.ts`, "import { ErrorCode } from '@flotilla/protocol';\nexport const x = ErrorCode;\n")).toEqual([]);
    }
  });

  it('keeps the shared protocol free of app and tool imports', async () => {
    const messages = await lint('libs/protocol/src/bad-import.ts', "import '@flotilla/control-plane';\n");
    expect(messages.length).toBeGreaterThan(0);
  });
});

describe('type-aware lint', () => {
  // [issue 8] a promise nobody handles can kill the agent: every project lints floating and misused promises.
  it('refuses a floating promise, also behind `void`, in every project', async () => {
    const code = "import { readFile } from 'node:fs/promises';\nexport function f(): void {\n  readFile('/x');\n  void readFile('/y');\n}\n";
    for (const dir of ['apps/control-plane/src', 'apps/device-agent/src', 'libs/protocol/src', 'tools/src']) {
      const rules = (await lintAs(`${dir}/planted-floating-promise.ts`, code)).map((m) => m.ruleId);
      expect(rules.filter((rule) => rule === '@typescript-eslint/no-floating-promises')).toHaveLength(2);
    }
  });

  it('refuses a promise passed where a void callback is expected', async () => {
    const code = "export function f(): void {\n  setTimeout(async () => {\n    await Promise.resolve();\n  }, 1);\n  [1].forEach(async () => undefined);\n}\n";
    const rules = (await lintAs('apps/device-agent/src/planted-misused-promise.ts', code)).map((m) => m.ruleId);
    expect(rules).toContain('@typescript-eslint/no-misused-promises');
  });

  it('accepts a promise whose rejection is handled', async () => {
    const code = "import { readFile } from 'node:fs/promises';\nexport function f(log: (e: unknown) => void): void {\n  readFile('/x').catch(log);\n}\n";
    expect(await lintAs('apps/device-agent/src/planted-handled-promise.ts', code)).toEqual([]);
  });
});

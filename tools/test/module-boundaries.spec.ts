import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

// The workspace's own lint rules, run the way `nx run-many -t lint` runs them: an app importing another app must fail.
const root = fileURLToPath(new URL('../..', import.meta.url));

async function lint(filePath: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: root });
  const [result] = await eslint.lintText(code, { filePath: `${root}/${filePath}` });
  return (result?.messages ?? []).filter((m) => m.ruleId === '@nx/enforce-module-boundaries').map((m) => m.message);
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

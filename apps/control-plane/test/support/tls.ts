import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

/** A throwaway self-signed certificate for localhost, made with the system's openssl. */
export async function selfSignedCertificate(): Promise<{ cert: Buffer; key: Buffer; certFile: string; keyFile: string; dispose: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-tls-'));
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  await promisify(execFile)('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', keyFile, '-out', certFile,
  ]);
  return {
    cert: await readFile(certFile),
    key: await readFile(keyFile),
    certFile,
    keyFile,
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

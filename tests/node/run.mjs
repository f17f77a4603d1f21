// Runs the Node suite: makes the development CA every server of the suite uses (by starting
// one server on a fresh certificate directory), then runs `node --test` on the test files with
// `NODE_EXTRA_CA_CERTS` naming that CA, so the client libraries trust the servers with their
// default HTTPS settings.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const certs = mkdtempSync(path.join(os.tmpdir(), 'ingest-emulator-node-certs-'));
let status = 1;
try {
  process.env.INGEST_TEST_CERTS = certs;
  const { startServer } = await import('./harness.mjs');
  const first = await startServer();
  await first.stop();
  const files = readdirSync(here)
    .filter((f) => f.endsWith('.test.mjs'))
    .sort()
    .map((f) => path.join(here, f));
  // A test that hangs (a client library waiting forever) fails after 2 minutes; the whole
  // run is cut after 15.
  const run = spawnSync(
    process.execPath,
    ['--test', '--test-concurrency=2', '--test-timeout=120000', ...files],
    {
      stdio: 'inherit',
      timeout: 15 * 60_000,
      killSignal: 'SIGTERM',
      env: { ...process.env, NODE_EXTRA_CA_CERTS: path.join(certs, 'ca.pem') },
    },
  );
  if (run.error) console.error(`node --test: ${run.error.message}`);
  status = run.status ?? 1;
} finally {
  rmSync(certs, { recursive: true, force: true });
}
process.exit(status);

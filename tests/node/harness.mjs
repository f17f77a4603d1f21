// Shared plumbing of the Node suite: real `ingest-emulator` servers on ephemeral ports and
// stores, and the admin API calls the tests check with.
//
// Every server of the suite serves a certificate of one development CA (`INGEST_TEST_CERTS`,
// made by `run.mjs` before Node starts the tests), which Node trusts through
// `NODE_EXTRA_CA_CERTS`: the client libraries run with their default HTTPS settings, as a
// partner's connector would.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.INGEST_EMULATOR_BIN ?? path.join(REPO, 'target', 'debug', 'ingest-emulator');

// The embedded Contoso fixture.
export const TENANT = '11111111-1111-1111-1111-111111111111';
export const TENANT_DOMAIN = 'contoso.onmicrosoft.com';
export const APP_ID = '22222222-2222-2222-2222-222222222222';
export const APP_SECRET = 'dev-secret-value';
export const UNCONSENTED_APP_ID = '33333333-3333-3333-3333-333333333333';
export const UNCONSENTED_SECRET = 'unconsented-secret';
export const DISABLED_APP_ID = '44444444-4444-4444-4444-444444444444';
export const DISABLED_SECRET = 'disabled-secret';
export const EXCHANGE_SCOPE = 'https://outlook.office365.com/.default';
export const SERVICE_PATH = '/service/ThirdPartyIngestionService.svc';

const STARTUP_MS = Number(process.env.INGEST_TEST_STARTUP_TIMEOUT ?? 60) * 1000;

// Servers still running when this process exits (a test file killed, or one that forgot to
// stop its server) are killed with it: an orphan would keep its port and ephemeral store.
const running = new Set();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/**
 * Starts a server (`serve --ephemeral` on a free port, plus `args`) and resolves once its
 * banner is printed. `stop()` sends SIGTERM and waits for the exit.
 */
export async function startServer(...args) {
  if (!existsSync(BIN)) {
    throw new Error(`server binary ${BIN} not found: run \`cargo build\` (or set INGEST_EMULATOR_BIN)`);
  }
  const certs = process.env.INGEST_TEST_CERTS;
  if (!certs) throw new Error('INGEST_TEST_CERTS is not set: run the suite with `node run.mjs`');
  const adminKey = 'node-admin-' + randomBytes(16).toString('hex');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('INGEST_')));
  // Every server of the suite reads the certificate directory `run.mjs` filled; none adds a
  // name to it (`--tls-san`), which would have concurrent servers rewrite it.
  const proc = spawn(
    BIN,
    ['serve', '--ephemeral', '--listen', '127.0.0.1:0', '--admin-key', adminKey, '--certs', certs, ...args],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(proc);
  let stderr = '';
  proc.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-8000);
  });
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      resolve({ code, signal });
    });
    // Could not be started at all: no `exit` follows.
    proc.once('error', (error) => {
      running.delete(proc);
      stderr += `\n${error.message}`;
      resolve({ code: null, signal: null, error });
    });
  });
  const banner = await new Promise((resolve, reject) => {
    const seen = {};
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`ingest-emulator printed no banner in ${STARTUP_MS} ms; stderr: ${stderr}`));
    }, STARTUP_MS);
    const lines = readline.createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      const url = /^\s*Base URL:\s*(\S+)/.exec(line);
      if (url) seen.url = url[1].replace(/\/$/, '');
      if (/^\s*Store:/.test(line)) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
    exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`ingest-emulator exited (${code}) before its banner; stderr: ${stderr}`));
    });
  });
  return new Server(proc, exited, banner.url, adminKey, () => stderr);
}

export class Server {
  constructor(proc, exited, baseUrl, adminKey, stderr) {
    this.proc = proc;
    this.exited = exited;
    this.baseUrl = baseUrl;
    this.adminKey = adminKey;
    this.stderr = stderr;
  }

  get host() {
    return new URL(this.baseUrl).host;
  }

  get ewsUrl() {
    return this.baseUrl + SERVICE_PATH;
  }

  /** The authority MSAL is given: the server's base URL and a tenant. */
  authority(tenant = TENANT_DOMAIN) {
    return `${this.baseUrl}/${tenant}`;
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null && this.proc.pid !== undefined) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
  }

  /** An admin API call; answers `{status, body}` (body parsed when JSON). */
  async admin(method, apiPath, json) {
    const init = { method, headers: { Authorization: `Bearer ${this.adminKey}` } };
    if (json !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(json);
    }
    const response = await fetch(this.baseUrl + apiPath, init);
    const text = await response.text();
    let body = text;
    if ((response.headers.get('content-type') ?? '').includes('json') && text) body = JSON.parse(text);
    return { status: response.status, body, headers: response.headers };
  }

  /** An admin API call that must succeed (2xx); answers the body. */
  async adminOk(method, apiPath, json) {
    const { status, body } = await this.admin(method, apiPath, json);
    if (status < 200 || status > 299) {
      throw new Error(`${method} ${apiPath}: ${status} ${typeof body === 'string' ? body : JSON.stringify(body)}`);
    }
    return body;
  }

  /** The raw bytes an admin API route answers (it must succeed). */
  async adminBytes(apiPath) {
    const response = await fetch(this.baseUrl + apiPath, { headers: { Authorization: `Bearer ${this.adminKey}` } });
    if (!response.ok) throw new Error(`GET ${apiPath}: ${response.status} ${await response.text()}`);
    return Buffer.from(await response.arrayBuffer());
  }

  /** The items of a mailbox folder, newest first (the admin API's listing). */
  async folderItems(upn, folder = 'Recoverable Items/Purges', tenant = TENANT) {
    const q = new URLSearchParams({ folder });
    const body = await this.adminOk('GET', `/api/tenants/${tenant}/mailboxes/${encodeURIComponent(upn)}/items?${q}`);
    return body.value;
  }

  /** One stored item, with its copies and attachments. */
  async item(id, tenant = TENANT) {
    return this.adminOk('GET', `/api/tenants/${tenant}/items/${encodeURIComponent(id)}`);
  }

  /** The ingestion journal, newest first. */
  async ingestions(tenant = TENANT) {
    return (await this.adminOk('GET', `/api/tenants/${tenant}/ingestions`)).value;
  }
}

/**
 * Runs `fn(server)` with a fresh server, and stops it afterwards whatever happens (for
 * `node:test`'s `test()` bodies).
 */
export async function withServer(args, fn) {
  const server = await startServer(...args);
  try {
    return await fn(server);
  } catch (e) {
    const log = server.stderr();
    if (log) e.message += `\n--- server stderr (tail) ---\n${log.slice(-3000)}`;
    throw e;
  } finally {
    await server.stop();
  }
}

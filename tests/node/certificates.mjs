// Test certificates of connector apps.

import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A self-signed certificate and its key (PEM), made with openssl. */
export function makeCertificate(cn) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ingest-node-cert-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '30',
      '-subj', `/CN=${cn}`,
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    const certPem = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
    const keyPem = readFileSync(path.join(dir, 'key.pem'), 'utf8');
    const der = new X509Certificate(certPem).raw;
    return {
      certPem,
      keyPem,
      sha1: createHash('sha1').update(der).digest('hex').toUpperCase(),
      sha256: createHash('sha256').update(der).digest('hex').toUpperCase(),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}


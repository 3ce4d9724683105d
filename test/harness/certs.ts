import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

/** A PEM certificate and its key, as files. */
export interface CertFiles {
  cert: string;
  key: string;
}

export interface LeafSpec {
  /** Subject CN. etcd with --client-cert-auth takes a client cert's CN as the user name when no token is sent. */
  cn: string;
  /** subjectAltName entries, e.g. ['DNS:greeter', 'IP:127.0.0.1']. */
  san?: string[];
}

/**
 * A throw-away PKI made with the `openssl` binary at test time: one CA and
 * any number of leaf certificates it signs (serverAuth + clientAuth, P-256
 * keys, valid for a day), all in one temporary folder. `another CA` for
 * "signed by someone else" cases is just a second TestPki.
 */
export class TestPki {
  readonly dir: string;
  readonly ca: CertFiles;

  private constructor(name: string) {
    this.dir = mkdtempSync(path.join(tmpdir(), 'etcd-mesh-pki-'));
    this.ca = { cert: path.join(this.dir, 'ca.crt'), key: path.join(this.dir, 'ca.key') };
    openssl([
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', this.ca.key, '-out', this.ca.cert, '-days', '1', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
  }

  /** Throws a clear error when `openssl` is missing (Debian: apt-get install openssl). */
  static create(name = 'etcd-mesh test CA'): TestPki {
    try {
      execFileSync('openssl', ['version'], { stdio: 'pipe' });
    } catch {
      throw new Error('the tests need the openssl binary (Debian: apt-get install openssl)');
    }
    return new TestPki(name);
  }

  /** Path of the CA certificate (what --cacert / --tls-ca take). */
  get caCert(): string {
    return this.ca.cert;
  }

  /** A leaf certificate signed by this CA, written as `<file>.crt` / `<file>.key`. */
  issue(file: string, spec: LeafSpec): CertFiles {
    const out = { cert: path.join(this.dir, `${file}.crt`), key: path.join(this.dir, `${file}.key`) };
    const csr = path.join(this.dir, `${file}.csr`);
    const ext = path.join(this.dir, `${file}.ext`);
    const lines = ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth,clientAuth'];
    if (spec.san?.length) lines.push(`subjectAltName=${spec.san.join(',')}`);
    writeFileSync(ext, lines.join('\n') + '\n');
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', out.key, '-out', csr, '-subj', `/CN=${spec.cn}`]);
    openssl(['x509', '-req', '-in', csr, '-CA', this.ca.cert, '-CAkey', this.ca.key, '-CAcreateserial', '-out', out.cert, '-days', '1', '-extfile', ext]);
    return out;
  }

  /** A file with arbitrary content in the PKI folder (for "not a certificate" cases). */
  write(file: string, content: string | Buffer): string {
    const p = path.join(this.dir, file);
    writeFileSync(p, content);
    return p;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: 'pipe', timeout: 20_000 });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args.slice(0, 2).join(' ')} failed: ${e.stderr?.toString().trim() || e.message}`);
  }
}

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { checkArgs } from '../cli/main';

const ROOT = path.resolve(__dirname, '..');

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
}

describe('docker-compose.yml', () => {
  it('is valid for a real compose implementation (docker-compose config -q, no engine needed)', () => {
    // Throws (non-zero exit) on an invalid file.
    const out = execFileSync('docker-compose', ['-f', path.join(ROOT, 'docker-compose.yml'), 'config', '-q'], { encoding: 'utf8' });
    expect(out).toBe('');
  });

  it('runs 3 etcd members from the official image, 3 greeters and a load client, every command valid for the mesh CLI', async () => {
    const doc = parse(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService> };
    const services = Object.entries(doc.services);
    const etcd = services.filter(([, s]) => s.image?.startsWith('gcr.io/etcd-development/etcd:'));
    const mesh = services.filter(([, s]) => s.build !== undefined);
    expect(etcd.map(([n]) => n).sort()).toEqual(['etcd1', 'etcd2', 'etcd3']);
    expect(mesh.map(([, s]) => s.command![0]).sort()).toEqual(['load', 'server', 'server', 'server']);
    for (const [name, s] of mesh) {
      expect({ name, error: await checkArgs(s.command!) }).toEqual({ name, error: undefined });
    }
    // The check does catch a bad command line.
    expect(await checkArgs(['server', '--port', 'x'])).toMatch(/--port/);
  });
});

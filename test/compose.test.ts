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
  healthcheck?: { test?: string[] };
  depends_on?: unknown;
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
    // Each greeter's health is `mesh health` on its own address (grpc.health.v1), a valid mesh command line; the load waits for all three.
    for (const [name, s] of mesh.filter(([, m]) => m.command![0] === 'server')) {
      const test = s.healthcheck?.test ?? [];
      expect(test.slice(0, 4)).toEqual(['CMD', 'node', 'dist/cli/main.js', 'health']);
      expect(test[4]).toBe(`${name}:50051`);
      expect({ name, error: await checkArgs(test.slice(3)) }).toEqual({ name, error: undefined });
    }
    expect(doc.services.load.depends_on).toEqual({ greeter1: { condition: 'service_healthy' }, greeter2: { condition: 'service_healthy' }, greeter3: { condition: 'service_healthy' } });
    // The check does catch a bad command line.
    expect(await checkArgs(['server', '--port', 'x'])).toMatch(/--port/);
  });
});

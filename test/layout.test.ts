import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from './harness/mesh-process';

/** Relative imports of every .ts file in `dir`, as `file: specifier`. */
function imports(dir: string): string[] {
  return readdirSync(path.join(REPO, dir))
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) => [...readFileSync(path.join(REPO, dir, f), 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'/g)].map((m) => `${dir}/${f}: ${m[1]}`));
}

// The layering DESIGN.md draws: core/ under everything; balancer/ and
// coordination/ on core/ only; coordination/ never on balancer/.
describe('layout', () => {
  it('core/ imports only core/', () => {
    expect(imports('core').filter((i) => !/: \.\/[^/]+$/.test(i))).toEqual([]);
  });
  it('coordination/ imports core/ and itself, never balancer/', () => {
    expect(imports('coordination').filter((i) => !/: (\.\/[^/]+|\.\.\/core\/[^/]+)$/.test(i))).toEqual([]);
  });
  it('balancer/ imports core/ and itself only', () => {
    expect(imports('balancer').filter((i) => !/: (\.\/[^/]+|\.\.\/core\/[^/]+)$/.test(i))).toEqual([]);
  });
  it('dashboard/ imports core/, the endpoint codec, coordination/ decoders and itself only; only cli/ and demo/ import it', () => {
    expect(imports('dashboard').filter((i) => !/: (\.\/[^/]+|\.\.\/core\/[^/]+|\.\.\/balancer\/endpoint-codec|\.\.\/coordination\/monitor-(elections|leases)|\.\.\/services\/metrics-[^/]+)$/.test(i))).toEqual([]);
    const others = ['core', 'balancer', 'coordination', 'services', 'bench'].flatMap(imports);
    expect(others.filter((i) => /\.\.\/dashboard\//.test(i))).toEqual([]);
  });
});

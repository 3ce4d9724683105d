import { describe, expect, it } from 'vitest';
import { DecodeError, DEFAULT_WEIGHT, decodeEndpoint, encodeEndpoint, endpointKey, isHostPort, parseWeight, type EndpointRecord } from '../balancer/endpoint-codec';

describe('endpoint codec (Go naming/endpoints format)', () => {
  it('writes what Go endpoints.Manager writes', () => {
    // Our attributes go inside a JSON string: Go's resolver hands Metadata to grpc-go, which panics hashing an object (etcd #19700).
    expect(encodeEndpoint('127.0.0.1:50051', { weight: 1 })).toBe('{"Op":0,"Addr":"127.0.0.1:50051","Metadata":"{\\"weight\\":1}"}');
    expect(encodeEndpoint('127.0.0.1:50051', 'plain')).toBe('{"Op":0,"Addr":"127.0.0.1:50051","Metadata":"plain"}');
    expect(encodeEndpoint('127.0.0.1:50051')).toBe('{"Op":0,"Addr":"127.0.0.1:50051","Metadata":null}');
    expect(endpointKey('services', 'greeter', '127.0.0.1:1')).toBe('services/greeter/127.0.0.1:1');
    expect(endpointKey('/services/', 'greeter', '127.0.0.1:1')).toBe('services/greeter/127.0.0.1:1');
  });

  it('reads Go records with any Metadata', () => {
    for (const md of ['null', '"x"', '42', '[1,2]', '{"a":{"b":[true]}}']) {
      const r = decodeEndpoint('k', `{"Op":0,"Addr":"10.0.0.1:80","Metadata":${md}}`);
      expect(r).not.toBeInstanceOf(DecodeError);
      expect((r as { addr: string }).addr).toBe('10.0.0.1:80');
      expect((r as { metadata: unknown }).metadata).toEqual(JSON.parse(md));
    }
    expect(decodeEndpoint('k', '{"Addr":"[::1]:80"}')).toMatchObject({ addr: '[::1]:80', metadata: null });
  });

  it('reads our attributes from a JSON string, an object (other writers) or nothing; a bad weight falls back with a warning', () => {
    const read = (md: string) => decodeEndpoint('services/greeter/a:1', `{"Op":0,"Addr":"a:1","Metadata":${md}}`) as EndpointRecord;
    expect(read(JSON.stringify(JSON.stringify({ weight: 90, zone: 'z1' })))).toMatchObject({ metadata: { weight: 90, zone: 'z1' }, attributes: { weight: 90, zone: 'z1' }, warnings: [] });
    expect(read('{"weight":10}')).toMatchObject({ attributes: { weight: 10 }, warnings: [] });
    expect(read('{"weight":"250"}').attributes.weight).toBe(250);
    expect(read('null')).toMatchObject({ metadata: null, attributes: { weight: DEFAULT_WEIGHT }, warnings: [] });
    expect(read('"not json"')).toMatchObject({ metadata: 'not json', attributes: { weight: DEFAULT_WEIGHT }, warnings: [] });
    // Weight 0 is valid: it drains the backend (never defaulted).
    expect(read('{"weight":0}')).toMatchObject({ attributes: { weight: 0 }, warnings: [] });
    for (const bad of ['-5', '"heavy"', '1001', '2.5', 'true']) {
      const r = read(`{"weight":${bad}}`);
      expect(r.attributes.weight).toBe(DEFAULT_WEIGHT);
      expect(r.warnings).toHaveLength(1);
      expect(r.warnings[0]).toMatch(/weight .* using the default weight 100/);
    }
    // What we write reads back as what we meant.
    const ours = decodeEndpoint('k', encodeEndpoint('a:1', { weight: 7, version: '1.2' })) as EndpointRecord;
    expect(ours.metadata).toEqual({ weight: 7, version: '1.2' });
    expect(ours.attributes).toEqual({ weight: 7, version: '1.2' });
    expect(parseWeight(1000)).toBe(1000);
    expect(parseWeight(1)).toBe(1);
    expect(parseWeight(0)).toBe(0);
  });

  it('rejects garbage with a reason, never throws', () => {
    const bad: [string | Buffer, RegExp][] = [
      ['', /empty/],
      ['garbage', /not JSON/],
      ['null', /not a JSON object/],
      ['[1]', /not a JSON object/],
      ['{"Op":0}', /missing Addr/],
      ['{"Op":1,"Addr":"a:1"}', /Op/],
      ['{"Addr":"no-port"}', /not host:port/],
      ['{"Addr":"a:99999"}', /not host:port/],
      [Buffer.from([0xff, 0xfe, 0x00, 0x01]), /not JSON/],
      ['{"Addr":"a:1","Metadata":' + '['.repeat(5000) + ']'.repeat(5000) + '}', /nested deeper/],
      ['{"Addr":"' + 'a'.repeat(300) + ':1"}', /not host:port/],
      ['{"Addr":"' + 'b'.repeat(64) + '.example:1"}', /not host:port/],
      ['x'.repeat(70_000), /exceeds/],
    ];
    for (const [value, reason] of bad) {
      const r = decodeEndpoint('services/greeter/x', value);
      if (r instanceof DecodeError) {
        expect(r.key).toBe('services/greeter/x');
        expect(r.reason).toMatch(reason);
      } else {
        expect.fail(`accepted ${String(value).slice(0, 40)}`);
      }
    }
  });

  it('validates host:port', () => {
    expect(isHostPort('127.0.0.1:1')).toBe(true);
    expect(isHostPort('host.example:65535')).toBe(true);
    expect(isHostPort('[::1]:443')).toBe(true);
    expect(isHostPort('127.0.0.1:0')).toBe(false);
    expect(isHostPort('127.0.0.1')).toBe(false);
    expect(isHostPort('a b:1')).toBe(false);
    expect(isHostPort(`${'a'.repeat(63)}.example:1`)).toBe(true);
    expect(isHostPort('a..b:1')).toBe(false);
    // Strings inside a record do not count as nesting.
    expect(decodeEndpoint('k', `{"Addr":"a:1","Metadata":{"s":"${'['.repeat(100)}"}}`)).toMatchObject({ addr: 'a:1' });
  });
});

import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { argBytes, decodeEscaped, encodeEscaped, losslessArgv } from '../cli/argv-bytes';

/**
 * The lossless argv decoding behind `mesh kv`/`pub`/`progress` raw bytes
 * (the end-to-end checks against etcdctl are in kv-etcdctl and
 * bytes-pubsub-progress): every byte string survives decode → encode, valid
 * UTF-8 decodes exactly as Node does, and distinct invalid bytes stay distinct.
 */
describe('argv bytes: surrogateescape decoding', () => {
  it('round-trips every byte string, and decodes valid UTF-8 as Node does', () => {
    const samples: Buffer[] = [
      Buffer.alloc(0),
      Buffer.from('plain ascii'),
      Buffer.from('héllo ✓ 😀 \u{10ffff}'),
      Buffer.from([0xff]),
      Buffer.from([0xfe, 0x80, 0xc3, 0x28]),
      Buffer.from([0xc0, 0xaf]), // overlong "/"
      Buffer.from([0xed, 0xa0, 0x80]), // an encoded surrogate
      Buffer.from([0xf4, 0x90, 0x80, 0x80]), // past U+10FFFF
      Buffer.from([0xf0, 0x9f, 0x98]), // truncated 4-byte sequence
      Buffer.from([0xf0, 0x90, 0x82, 0x80, 0xdc, 0x80]), // U+10080 (low surrogate DC80) then an invalid pair
      Buffer.from([0xed, 0xb2, 0x80]), // what U+DC80 would encode to: invalid, escaped byte by byte
    ];
    for (let i = 0; i < 2000; i++) samples.push(randomBytes(1 + (i % 12)));
    for (const b of samples) {
      const text = decodeEscaped(b);
      expect(encodeEscaped(text).toString('hex'), b.toString('hex')).toBe(b.toString('hex'));
      expect(argBytes(text).toString('hex'), b.toString('hex')).toBe(b.toString('hex'));
      // Where Node's own decoding is lossless, ours is the same string.
      if (Buffer.from(b.toString('utf8')).equals(b)) expect(text).toBe(b.toString('utf8'));
    }
    expect(decodeEscaped(Buffer.from([0xff]))).not.toBe(decodeEscaped(Buffer.from([0xfe])));
  });

  it('leaves an argv that is not this process\'s own untouched', () => {
    const made = ['node', 'mesh', 'kv', 'get', 'x\uFFFD'];
    expect(losslessArgv(made)).toBe(made);
  });
});

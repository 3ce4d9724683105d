import type { IKeyValue } from 'etcd3';

/**
 * etcdctl v3's default "simple" output, byte for byte (etcdctl/ctlv3/command/
 * printer_simple.go): a key/value pair is the key's bytes and a newline, then
 * the value's bytes and a newline (`fmt.Println(string(bytes))`: no escaping,
 * binary values printed raw). With --print-value-only the key line is left
 * out. --keys-only asks etcd for no values, so each value line is empty.
 */

const NL = Buffer.from('\n');

export interface PrintOptions {
  valueOnly?: boolean;
}

export function formatKv(kv: IKeyValue, opts: PrintOptions = {}): Buffer[] {
  return opts.valueOnly ? [kv.value, NL] : [kv.key, NL, kv.value, NL];
}

/** `etcdctl get`: every pair; nothing at all when nothing matched. */
export function formatGet(kvs: IKeyValue[], opts: PrintOptions = {}): Buffer {
  return Buffer.concat(kvs.flatMap((kv) => formatKv(kv, opts)));
}

/** `etcdctl put`: `OK`, then the previous pair when --prev-kv found one. */
export function formatPut(prev: IKeyValue | null | undefined, opts: PrintOptions = {}): Buffer {
  return Buffer.concat([Buffer.from('OK\n'), ...(prev ? formatKv(prev, opts) : [])]);
}

/** `etcdctl del`: the number deleted, then the deleted pairs when --prev-kv. */
export function formatDel(deleted: string, prevKvs: IKeyValue[], opts: PrintOptions = {}): Buffer {
  return Buffer.concat([Buffer.from(`${deleted}\n`), ...prevKvs.flatMap((kv) => formatKv(kv, opts))]);
}

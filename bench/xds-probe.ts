import * as grpc from '@grpc/grpc-js';
import { XdsProtos, type DiscoveryRequest, type DiscoveryResponse, type XdsTypeUrl } from '../services/xds-protos';

/**
 * A bare ADS client for the bench and the protocol tests: one SotW stream,
 * requests sent exactly as asked (so a test can ACK late, NACK, or send
 * what a real client never would), every response kept with its arrival
 * time. Real clients (C core, grpc-js-xds) are what the client tests use;
 * this one exists to see the wire.
 */

/** A response as received: decoded resources beside the raw ones. */
export interface ProbeResponse extends DiscoveryResponse {
  /** performance.now() at arrival. */
  at: number;
  /** The resources decoded to plain objects (proto field names); decoded on first use, so a bench of many clients does not spend its CPU here. */
  readonly decoded: Record<string, unknown>[];
}

export interface ProbeOptions {
  nodeId?: string;
  /** ACK every response at once with the current subscription (what a client does); default true. */
  autoAck?: boolean;
  /** Called on every response, after it is recorded. */
  onResponse?: (r: ProbeResponse) => void;
}

type Stream = grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;

export class AdsProbe {
  readonly responses: ProbeResponse[] = [];
  /** The stream's end: its status (OK when the server ended it cleanly). */
  readonly ended: Promise<grpc.StatusObject>;
  private readonly client: grpc.Client;
  private readonly call: Stream;
  private readonly names = new Map<XdsTypeUrl, string[]>();
  private readonly nonces = new Map<string, string>();
  private sentNode = false;
  private waiters: (() => void)[] = [];

  constructor(
    address: string,
    private readonly opts: ProbeOptions = {},
    private readonly protos = XdsProtos.get(),
  ) {
    const Client = grpc.makeGenericClientConstructor(protos.adsService(), 'AggregatedDiscoveryService');
    // A connection of its own, as each real client process has (grpc-js would otherwise share one between probes).
    this.client = new Client(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    this.call = (this.client as unknown as { StreamAggregatedResources(): Stream }).StreamAggregatedResources();
    this.ended = new Promise((resolve) => this.call.on('status', resolve));
    this.call.on('error', () => undefined); // the status says it
    this.call.on('data', (res: DiscoveryResponse) => this.onData(res));
  }

  /** Subscribe `type` to `names` (empty: wildcard for LDS/CDS), with the last nonce of that type. */
  subscribe(type: XdsTypeUrl, names: string[]): void {
    this.names.set(type, names);
    this.send({ type_url: type, resource_names: names, response_nonce: this.nonces.get(type) ?? '', version_info: '' });
  }

  /** ACK `res` (its version and nonce, the current names). */
  ack(res: ProbeResponse): void {
    this.send({ type_url: res.type_url, resource_names: this.names.get(res.type_url as XdsTypeUrl) ?? [], response_nonce: res.nonce, version_info: res.version_info });
  }

  /** NACK `res` with `message` as error_detail (version_info: the last one ACKed, as clients do). */
  nack(res: ProbeResponse, message: string, lastGoodVersion = ''): void {
    this.send({ type_url: res.type_url, resource_names: this.names.get(res.type_url as XdsTypeUrl) ?? [], response_nonce: res.nonce, version_info: lastGoodVersion, error_detail: { code: grpc.status.INVALID_ARGUMENT, message } });
  }

  /** Send a request as given (node added to the first). */
  send(req: Partial<DiscoveryRequest> & Record<string, unknown>): void {
    const node = this.sentNode ? undefined : { id: this.opts.nodeId ?? 'probe', cluster: 'bench', user_agent_name: 'etcd-mesh probe', locality: {} };
    this.sentNode = true;
    this.call.write({ ...req, ...(node ? { node } : {}) } as DiscoveryRequest);
  }

  /** Responses of `type` so far. */
  of(type: XdsTypeUrl): ProbeResponse[] {
    return this.responses.filter((r) => r.type_url === type);
  }

  /** The first response of `type` (after index `after` of all responses) that `pred` accepts. */
  async next(type: XdsTypeUrl, pred: (r: ProbeResponse) => boolean = () => true, timeoutMs = 5_000, after = 0): Promise<ProbeResponse> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.responses.slice(after).find((r) => r.type_url === type && pred(r));
      if (found) return found;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no ${type} response${pred.toString().length < 200 ? ` matching ${pred.toString()}` : ''} within ${timeoutMs} ms (got ${this.responses.length} responses)`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }

  private onData(res: DiscoveryResponse): void {
    const protos = this.protos;
    let decoded: Record<string, unknown>[] | undefined;
    const r: ProbeResponse = {
      ...res,
      at: performance.now(),
      get decoded() {
        return (decoded ??= res.resources.map((a) => protos.decodeAny(a)));
      },
    };
    this.responses.push(r);
    this.nonces.set(r.type_url, r.nonce);
    if (this.opts.autoAck !== false) this.ack(r);
    this.opts.onResponse?.(r);
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../core/logger';
import { isXdsTypeUrl, TYPE_SHORT, TYPE_URL, XDS_TYPE_URLS, type DiscoveryRequest, type DiscoveryResponse, type XdsTypeUrl } from './xds-protos';
import type { XdsResource, XdsSnapshot } from './xds-snapshot';
import type { XdsClientInfo, XdsObserver } from './xds-observer';

/**
 * One client's ADS stream, state of the world (SotW), as the xDS protocol
 * spec has it:
 *
 * - Subscriptions per type. For LDS and CDS, a first request with no names is
 *   a wildcard (every resource), as is `*` among the names; for RDS and EDS
 *   an empty list subscribes to nothing.
 * - A response holds every subscribed resource that exists (a name that does
 *   not exist is omitted: for LDS/CDS the client then knows it does not exist;
 *   for RDS/EDS its does-not-exist timer decides), with `version_info` the
 *   snapshot's etcd revision and a nonce unique on the stream.
 * - A request whose `response_nonce` is the last one sent is an ACK, or a
 *   NACK when it carries `error_detail` (logged with the node id and the
 *   error; the rejected content is not sent again until it changes). A
 *   request naming an older nonce is stale and ignored, as the spec says.
 * - One response per type in flight: a change that arrives before the client
 *   answered the last response is folded into the next one, so a client
 *   that is slow to apply never gets a backlog, only the newest state.
 * - A request this server cannot serve (no type_url, a type it does not
 *   serve) ends this stream alone with INVALID_ARGUMENT; an undecodable one
 *   is ended by grpc-js (INTERNAL). Other streams carry on.
 */

type Call = grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;

/** Per type: what the client asked for and what it was last sent. */
interface TypeState {
  wildcard: boolean;
  names: Set<string>;
  /** The client has named resources explicitly at least once (an empty list no longer means wildcard). */
  explicit: boolean;
  /** Nonce of the last response; undefined before the first. */
  nonce: string | undefined;
  /** The last response is not yet ACKed or NACKed. */
  inFlight: boolean;
  /** Resources of the last response, by name (the snapshot's objects). */
  sent: Map<string, XdsResource>;
  sentVersion: string;
  /** The last version the client ACKed. */
  acked: string | undefined;
}

const WILDCARD_TYPES: ReadonlySet<string> = new Set([TYPE_URL.listener, TYPE_URL.cluster]);

export class AdsStream {
  private readonly types = new Map<XdsTypeUrl, TypeState>();
  private nodeId = '';
  private userAgent = '';
  private zone = '';
  private lastNack: XdsClientInfo['lastNack'];
  private nonces = 0;
  private closed = false;

  constructor(
    private readonly call: Call,
    /** The snapshot to serve now; undefined until the registry was first listed (requests then wait). */
    private readonly current: () => XdsSnapshot | undefined,
    private readonly log: Logger,
    private readonly observer: XdsObserver,
    private readonly onClose: (stream: AdsStream) => void,
  ) {
    observer.streamOpened?.();
    call.on('data', (req: DiscoveryRequest) => this.onRequest(req));
    call.on('end', () => this.close('client ended the stream', true));
    call.on('error', (err: Error) => this.close(`stream error: ${err.message}`, false));
    call.on('cancelled', () => this.close('cancelled by the client', false));
  }

  /** The client's node id, from its first request. */
  get node(): string {
    return this.nodeId;
  }

  /** What this client subscribes to and has accepted, for the metrics and the dashboard. */
  get info(): XdsClientInfo {
    const subscribed: XdsClientInfo['subscribed'] = {};
    const acked: XdsClientInfo['acked'] = {};
    for (const [type, st] of this.types) {
      subscribed[TYPE_SHORT[type]] = st.wildcard ? ['*', ...st.names] : [...st.names];
      if (st.acked !== undefined) acked[TYPE_SHORT[type]] = st.acked;
    }
    return { nodeId: this.nodeId, userAgent: this.userAgent, zone: this.zone, subscribed, acked, lastNack: this.lastNack };
  }

  /** A new snapshot: push every subscribed type whose content changed (unless a response of that type is in flight). */
  onSnapshot(snapshot: XdsSnapshot): void {
    for (const type of XDS_TYPE_URLS) {
      const st = this.types.get(type);
      if (st && !st.inFlight) this.pushIfChanged(type, st, snapshot, true);
    }
  }

  /** End the stream from the server side (shutdown). Idempotent. */
  end(reason: string): void {
    if (this.closed) return;
    this.call.end();
    this.close(reason, false);
  }

  private onRequest(req: DiscoveryRequest): void {
    if (this.closed) return;
    if (req.node && !this.nodeId) {
      this.nodeId = req.node.id;
      const n = req.node;
      this.userAgent = `${n.user_agent_name ?? ''} ${n.user_agent_version ?? ''}`.trim();
      this.zone = n.locality?.zone ?? '';
      this.log.info({ event: 'xds.client', node: n.id, cluster: n.cluster, zone: n.locality?.zone, userAgent: `${n.user_agent_name} ${n.user_agent_version ?? ''}`.trim(), peer: this.call.getPeer() }, `xDS client ${JSON.stringify(n.id)} connected (${n.user_agent_name} ${n.user_agent_version ?? ''})`);
    }
    const type = req.type_url;
    if (!isXdsTypeUrl(type)) {
      this.fail(type === '' ? 'no_type_url' : 'unknown_type_url', type === '' ? 'request without type_url (ADS needs one on every request)' : `type_url ${JSON.stringify(type.slice(0, 200))} is not served here (only v3 Listener, RouteConfiguration, Cluster, ClusterLoadAssignment)`);
      return;
    }
    let st = this.types.get(type);
    const first = !st;
    if (!st) {
      st = { wildcard: false, names: new Set(), explicit: false, nonce: undefined, inFlight: false, sent: new Map(), sentVersion: '', acked: undefined };
      this.types.set(type, st);
    }
    // Nonces belong to a stream: one on a type's first request here (a client carrying it over from
    // another replica or an older stream) is no reason to ignore the subscription.
    if (!first && req.response_nonce !== '' && req.response_nonce !== st.nonce) {
      this.log.debug({ event: 'xds.stale_request', node: this.nodeId, type: TYPE_SHORT[type], nonce: req.response_nonce, latest: st.nonce }, 'stale request ignored');
      return;
    }
    if (req.response_nonce !== '' && st.inFlight) {
      st.inFlight = false;
      if (req.error_detail) {
        const detail = req.error_detail.message;
        this.log.warn({ event: 'xds.nack', node: this.nodeId, type: TYPE_SHORT[type], version: st.sentVersion, acked: st.acked, error: detail }, `xDS client ${JSON.stringify(this.nodeId)} rejected ${TYPE_SHORT[type]} version ${st.sentVersion}: ${detail}`);
        this.observer.nacked?.(TYPE_SHORT[type], this.nodeId, detail);
        this.lastNack = { type: TYPE_SHORT[type], version: st.sentVersion, detail, at: Date.now() };
      } else {
        st.acked = st.sentVersion;
        this.log.debug({ event: 'xds.ack', node: this.nodeId, type: TYPE_SHORT[type], version: st.sentVersion }, 'ACK');
        this.observer.acked?.(TYPE_SHORT[type]);
      }
    }
    const changed = this.subscribe(type, st, req.resource_names);
    const snapshot = this.current();
    if (!snapshot) return; // answered when the first snapshot arrives
    if (first || changed) this.push(type, st, snapshot, false);
    else this.pushIfChanged(type, st, snapshot, true); // a change that waited for this ACK
  }

  /** Apply a request's resource_names; true when the subscription changed. */
  private subscribe(type: XdsTypeUrl, st: TypeState, names: string[]): boolean {
    const wasWildcard = st.wildcard;
    const before = [...st.names].sort().join('\n');
    if (names.length === 0 && WILDCARD_TYPES.has(type) && !st.explicit) {
      st.wildcard = true;
      st.names = new Set();
    } else {
      st.explicit = true;
      st.wildcard = WILDCARD_TYPES.has(type) && names.includes('*');
      st.names = new Set(names.filter((n) => n !== '*'));
    }
    return wasWildcard !== st.wildcard || before !== [...st.names].sort().join('\n');
  }

  /** The resources this client should hold of `type` now. */
  private wanted(type: XdsTypeUrl, st: TypeState, snapshot: XdsSnapshot): Map<string, XdsResource> {
    const all = snapshot.resources.get(type)!;
    if (st.wildcard) return new Map(all);
    const out = new Map<string, XdsResource>();
    for (const name of st.names) {
      const r = all.get(name);
      if (r) out.set(name, r);
    }
    return out;
  }

  private pushIfChanged(type: XdsTypeUrl, st: TypeState, snapshot: XdsSnapshot, causedByChange: boolean): void {
    if (st.inFlight) return;
    if (st.nonce === undefined) return this.push(type, st, snapshot, false); // asked before the first snapshot
    const wanted = this.wanted(type, st, snapshot);
    let same = wanted.size === st.sent.size;
    if (same) for (const [name, r] of wanted) if (st.sent.get(name) !== r) same = false;
    if (!same) this.push(type, st, snapshot, causedByChange, wanted);
  }

  private push(type: XdsTypeUrl, st: TypeState, snapshot: XdsSnapshot, causedByChange: boolean, wanted = this.wanted(type, st, snapshot)): void {
    if (this.closed) return;
    const nonce = String(++this.nonces);
    const res: DiscoveryResponse = { version_info: snapshot.version, resources: [...wanted.values()].map((r) => r.any), type_url: type, nonce };
    st.nonce = nonce;
    st.inFlight = true;
    st.sent = wanted;
    st.sentVersion = snapshot.version;
    this.call.write(res);
    const latency = causedByChange ? performance.now() - snapshot.changedAt : undefined;
    this.observer.pushed?.(TYPE_SHORT[type], res.resources.length, latency);
    this.log.debug({ event: 'xds.push', node: this.nodeId, type: TYPE_SHORT[type], version: snapshot.version, nonce, resources: res.resources.length, latencyMs: latency }, 'push');
  }

  /** End this stream with INVALID_ARGUMENT: a request it cannot serve. */
  private fail(reason: string, message: string): void {
    this.log.warn({ event: 'xds.bad_request', node: this.nodeId, reason, peer: this.call.getPeer() }, `ending the ADS stream of ${JSON.stringify(this.nodeId)}: ${message}`);
    this.observer.badRequest?.(reason);
    this.close(message, false);
    // grpc-js sends a status emitted as 'error' on a server stream, then ends it.
    this.call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: message });
  }

  private close(reason: string, endCall: boolean): void {
    if (this.closed) return;
    this.closed = true;
    if (endCall) this.call.end();
    this.log.info({ event: 'xds.client_gone', node: this.nodeId, reason }, `xDS client ${JSON.stringify(this.nodeId)} gone: ${reason}`);
    this.observer.streamClosed?.();
    this.onClose(this);
  }
}

import * as grpc from '@grpc/grpc-js';

/**
 * A retry above grpc-js's own, for the one failure its hedging cannot
 * cover: per the gRPC spec, an attempt is *committed* once response headers
 * arrive, and a backend SIGKILLed between sending headers and trailers fails
 * the call with UNAVAILABLE (ECONNRESET) although another backend would
 * answer. For idempotent methods only, this interceptor sends such a call
 * again (whole, through the channel: round_robin picks a live backend) while
 * the call's deadline, which covers every retry, has time left.
 *
 * Unary calls only (one request message, one response): the request is kept
 * to be sent again. Pattern: grpc-node's interceptor retry example (gRFC L5).
 */
export function unavailableRetryInterceptor(idempotentServices: string[], maxRetries = 3): grpc.Interceptor {
  const services = new Set(idempotentServices);
  return (options, nextCall) => {
    const service = options.method_definition.path.split('/')[1];
    if (!services.has(service) || options.method_definition.requestStream || options.method_definition.responseStream) {
      return new grpc.InterceptingCall(nextCall(options));
    }
    let metadata: grpc.Metadata;
    let request: unknown;
    const requester = new grpc.RequesterBuilder()
      .withStart((md, listener, next) => {
        metadata = md;
        let reply: unknown;
        let replyNext: ((m: unknown) => void) | undefined;
        let retries = 0;
        const deliver = (status: grpc.StatusObject, statusNext: (s: grpc.StatusObject) => void) => {
          if (replyNext && reply !== undefined) replyNext(reply);
          statusNext(status);
        };
        const shouldRetry = (status: grpc.StatusObject) => {
          const deadline = options.deadline instanceof Date ? options.deadline.getTime() : Number(options.deadline ?? Infinity);
          return status.code === grpc.status.UNAVAILABLE && retries < maxRetries && Date.now() < deadline;
        };
        const retry = (statusNext: (s: grpc.StatusObject) => void) => {
          retries++;
          const call = nextCall(options);
          call.start(metadata.clone(), {
            onReceiveMetadata: () => undefined,
            onReceiveMessage: (m: unknown) => (reply = m),
            onReceiveStatus: (status: grpc.StatusObject) => (shouldRetry(status) ? retry(statusNext) : deliver(status, statusNext)),
          });
          call.sendMessage(request);
          call.halfClose();
        };
        const first = new grpc.ListenerBuilder()
          .withOnReceiveMessage((m, nextMsg) => {
            reply = m;
            replyNext = nextMsg;
          })
          .withOnReceiveStatus((status, statusNext) => (shouldRetry(status) ? retry(statusNext) : deliver(status, statusNext)))
          .build();
        next(md, first);
      })
      .withSendMessage((message, next) => {
        request = message;
        next(message);
      })
      .build();
    return new grpc.InterceptingCall(nextCall(options), requester);
  };
}

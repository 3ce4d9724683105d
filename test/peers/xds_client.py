"""A helloworld client on gRPC's C core (Debian's python3-grpcio) resolving
an xds:/// target: gRPC's own xDS resolver and balancers, configured by the
control plane named in GRPC_XDS_BOOTSTRAP. We wrote nothing of the xDS
side: this only makes calls and counts who answered.

Usage: xds_client.py TARGET RATE CONCURRENCY DEADLINE_MS
Calls /helloworld.Greeter/SayHello about RATE times a second in total, from
CONCURRENCY threads, each call with a DEADLINE_MS deadline, until SIGTERM.
The backend is read from the reply ("Hello <name> from <host:port>").
stdout, one JSON object a line (the same protocol as xds-client-node.js):
  {"event":"started","client":"python-grpcio","version":"1.51.1"}
  {"event":"first","backend":"127.0.0.1:P","t":EPOCH_MS}      first reply from a backend
  {"event":"tick","t":EPOCH_MS,"ok":{"127.0.0.1:P":N},"failed":{"UNAVAILABLE":N}}  every 200 ms
  {"event":"error","code":"UNAVAILABLE","details":"...","t":EPOCH_MS}  the first 20 failures
  {"event":"done","ok":N,"failed":N,"backends":{...}}          on SIGTERM
"""
import json
import signal
import sys
import threading
import time

import grpc

from greeter_server import decode_string1, encode_string1

lock = threading.Lock()
window_ok, window_failed = {}, {}
total_ok, total_failed, backends = 0, 0, {}
errors_shown = 0
stop = threading.Event()


def emit(obj):
    line = json.dumps(obj) + "\n"
    with lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def now_ms():
    return int(time.time() * 1000)


def worker(call, period, deadline):
    global total_ok, total_failed, errors_shown
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            reply = call("xds", timeout=deadline)
            backend = reply.rsplit(" from ", 1)[-1]
            first = False
            with lock:
                window_ok[backend] = window_ok.get(backend, 0) + 1
                total_ok += 1
                if backend not in backends:
                    first = True
                backends[backend] = backends.get(backend, 0) + 1
            if first:
                emit({"event": "first", "backend": backend, "t": now_ms()})
        except grpc.RpcError as e:
            code = e.code().name
            show = False
            with lock:
                window_failed[code] = window_failed.get(code, 0) + 1
                total_failed += 1
                if errors_shown < 20:
                    errors_shown += 1
                    show = True
            if show:
                emit({"event": "error", "code": code, "details": e.details(), "t": now_ms()})
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()


def ticker():
    while not stop.wait(0.2):
        with lock:
            ok, failed = dict(window_ok), dict(window_failed)
            window_ok.clear()
            window_failed.clear()
        emit({"event": "tick", "t": now_ms(), "ok": ok, "failed": failed})


def main():
    target, rate, concurrency, deadline_ms = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    channel = grpc.insecure_channel(target)
    call = channel.unary_unary("/helloworld.Greeter/SayHello", request_serializer=encode_string1, response_deserializer=decode_string1)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emit({"event": "started", "client": "python-grpcio", "version": grpc.__version__})
    threads = [threading.Thread(target=worker, args=(call, concurrency / rate, deadline_ms / 1000.0), daemon=True) for _ in range(concurrency)]
    threads.append(threading.Thread(target=ticker, daemon=True))
    for t in threads:
        t.start()
    while not stop.wait(0.5):
        pass
    for t in threads:
        t.join(2)
    with lock:
        summary = {"event": "done", "ok": total_ok, "failed": total_failed, "backends": dict(backends)}
    emit(summary)
    channel.close()


if __name__ == "__main__":
    main()

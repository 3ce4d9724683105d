"""A standard helloworld greeter on gRPC's C core (Debian's python3-grpcio).

Default server options on purpose: this is the ping policy every C-core,
Go and Java server enforces (a client may ping at most every 5 minutes
without data, 2 strikes, then GOAWAY too_many_pings). A generic handler
serves /helloworld.Greeter/SayHello with HelloRequest/HelloReply encoded by
hand: both are one string in field 1, so no protoc is needed.

Usage: greeter_server.py PORT [--fail-code CODE] [--fail-fraction F]
  --fail-code CODE   answer calls with this status (a grpc.StatusCode name,
                     e.g. INTERNAL) instead of a reply; env GREETER_FAIL_CODE
  --fail-fraction F  fail this fraction of the calls, 0..1 (default 1 with
                     a code), spread evenly: every 1/F-th call, not at
                     random, so a short run fails exactly F; env
                     GREETER_FAIL_FRACTION
  SIGUSR1 heals (no call fails from then on), SIGUSR2 breaks it again.
stdout, one JSON object a line (the test reads them); "t" is time.time():
  {"event":"listening","addr":"127.0.0.1:PORT","failCode":C,"failFraction":F}
  {"event":"peer","peer":"ipv4:127.0.0.1:NNNNN","n":1,"t":T}  first call on a new connection
  {"event":"calls","calls":N,"failed":K,"peers":P,"t":T}       every second while calls arrive
  {"event":"healed","calls":N,"failed":K,"t":T} / {"event":"broken",...}  on SIGUSR1 / SIGUSR2
A reconnecting client shows up as a new peer (a new source port), so the
number of peers is the number of connections that carried calls.
"""
import argparse
import os
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_string1(s):
    """A message whose only field is `string field 1` (HelloReply)."""
    if not s:
        return b""
    data = s.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data


def decode_string1(buf):
    """Field 1 of a message, as a string; other fields are skipped (proto3 rules)."""
    i, out = 0, ""
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            if field == 1:
                out = buf[i:i + n].decode("utf-8")
            i += n
        else:
            raise ValueError("unsupported wire type %d" % wire)
    return out


def _read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


lock = threading.Lock()
peers = set()
calls = 0
failed = 0
# Failing: the status to answer with (None: never), the fraction, and the
# running credit that spreads the failures evenly.
fail_code = None
fail_fraction = 0.0
broken = False
credit = 0.0


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def status_code(name):
    try:
        return grpc.StatusCode[name.strip().upper()]
    except KeyError:
        raise argparse.ArgumentTypeError("unknown status code %r" % name)


def fraction(text):
    f = float(text)
    if not 0 <= f <= 1:
        raise argparse.ArgumentTypeError("fraction %r is not in 0..1" % text)
    return f


def main():
    global fail_code, fail_fraction, broken
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--fail-code", type=status_code, default=os.environ.get("GREETER_FAIL_CODE") and status_code(os.environ["GREETER_FAIL_CODE"]))
    ap.add_argument("--fail-fraction", type=fraction, default=os.environ.get("GREETER_FAIL_FRACTION") and fraction(os.environ["GREETER_FAIL_FRACTION"]))
    args = ap.parse_args()
    port = args.port
    addr = "127.0.0.1:%d" % port
    fail_code = args.fail_code
    fail_fraction = (1.0 if args.fail_fraction in (None, "") else args.fail_fraction) if fail_code else 0.0
    broken = fail_code is not None and fail_fraction > 0

    def say_hello(name, context):
        global calls, failed, credit
        peer = context.peer()
        fail = False
        with lock:
            calls += 1
            if peer not in peers:
                peers.add(peer)
                emit({"event": "peer", "peer": peer, "n": len(peers), "t": time.time()})
            if broken:
                credit += fail_fraction
                if credit >= 1 - 1e-9:
                    credit -= 1
                    fail = True
                    failed += 1
        if fail:
            context.abort(fail_code, "greeter_server.py: failing %g of calls with %s" % (fail_fraction, fail_code.name))
        return "Hello %s from %s" % (name or "world", addr)

    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello, request_deserializer=decode_string1, response_serializer=encode_string1)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(addr) != port:
        emit({"event": "error", "error": "cannot bind " + addr})
        sys.exit(1)
    server.start()
    emit({"event": "listening", "addr": addr, "failCode": fail_code.name if fail_code else None, "failFraction": fail_fraction})

    def set_broken(on):
        global broken
        with lock:
            broken = on and fail_code is not None and fail_fraction > 0
            emit({"event": "broken" if broken else "healed", "calls": calls, "failed": failed, "t": time.time()})

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: set_broken(False))
    signal.signal(signal.SIGUSR2, lambda *_: set_broken(True))
    last = -1
    while not stop.wait(1.0):
        with lock:
            snapshot = (calls, failed, len(peers))
        if snapshot[0] != last:
            last = snapshot[0]
            emit({"event": "calls", "calls": snapshot[0], "failed": snapshot[1], "peers": snapshot[2], "t": time.time()})
    server.stop(1).wait()
    with lock:
        emit({"event": "stopped", "calls": calls, "failed": failed, "peers": len(peers)})


if __name__ == "__main__":
    main()

"""A standard helloworld greeter on gRPC's C core (Debian's python3-grpcio).

Default server options on purpose: this is the ping policy every C-core,
Go and Java server enforces (a client may ping at most every 5 minutes
without data, 2 strikes, then GOAWAY too_many_pings). A generic handler
serves /helloworld.Greeter/SayHello with HelloRequest/HelloReply encoded by
hand: both are one string in field 1, so no protoc is needed.

Usage: greeter_server.py PORT
stdout, one JSON object a line (the test reads them):
  {"event":"listening","addr":"127.0.0.1:PORT"}
  {"event":"peer","peer":"ipv4:127.0.0.1:NNNNN","n":1}  first call on a new connection
  {"event":"calls","calls":N,"peers":P}                 every second while calls arrive
A reconnecting client shows up as a new peer (a new source port), so the
number of peers is the number of connections that carried calls.
"""
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


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    port = int(sys.argv[1])
    addr = "127.0.0.1:%d" % port

    def say_hello(name, context):
        global calls
        peer = context.peer()
        with lock:
            calls += 1
            if peer not in peers:
                peers.add(peer)
                emit({"event": "peer", "peer": peer, "n": len(peers)})
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
    emit({"event": "listening", "addr": addr})

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    last = -1
    while not stop.wait(1.0):
        with lock:
            snapshot = (calls, len(peers))
        if snapshot[0] != last:
            last = snapshot[0]
            emit({"event": "calls", "calls": snapshot[0], "peers": snapshot[1]})
    server.stop(1).wait()
    with lock:
        emit({"event": "stopped", "calls": calls, "peers": len(peers)})


if __name__ == "__main__":
    main()

"""A no-op grpcio unary server (bytes in, bytes out) in its own process: the floor of any
Python gRPC server. ``python bench/noop_server.py unix:/tmp/x.sock 1024`` answers every call
with REPLY_BYTES bytes; the benchmark measures its round trip beside edged's."""

from __future__ import annotations

import sys
from concurrent import futures

import grpc


def main() -> int:
    target, reply_bytes = sys.argv[1], int(sys.argv[2])
    reply = b"\0" * reply_bytes

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return reply

    handler = grpc.method_handlers_generic_handler("bench.Noop", {
        "Call": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(target)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A gRPC server for tests/grpc.rs: the service `meshgate.test.Orders` over
h2c on 127.0.0.1, with no generated stubs (generic handlers, messages as raw
bytes). Prints `PORT <n>` when it listens, and `ARRIVED <method>
remaining=<seconds or none>` as each call reaches a handler. A line `release`
on stdin lets every waiting `Slow` call answer.

Methods:
  Get     unary: answers b"order " + request; initial metadata x-seen-principal
          (the sidecar's x-meshgate-principal), trailing metadata x-order-count
  Watch   server streaming: three messages b"event 0".."event 2", trailing
          metadata x-events
  Put     unary: answers b"stored" (a write the policies deny)
  Mine    unary: answers b"mine" (a method that requires an end-user token)
  Slow    unary: waits until released (or the call is cancelled), answers b"late"
"""
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "meshgate.test.Orders"
waiting = []
released = threading.Event()
lock = threading.Lock()


def arrived(name, context):
    remaining = context.time_remaining()
    shown = "none" if remaining is None else f"{remaining:.3f}"
    print(f"ARRIVED {name} remaining={shown}", flush=True)


def metadata(context, key):
    for k, v in context.invocation_metadata():
        if k == key:
            return v
    return ""


def get(request, context):
    arrived("Get", context)
    context.send_initial_metadata((("x-seen-principal", metadata(context, "x-meshgate-principal")),))
    context.set_trailing_metadata((("x-order-count", "1"),))
    return b"order " + request


def watch(request, context):
    arrived("Watch", context)
    for i in range(3):
        yield f"event {i}".encode()
    context.set_trailing_metadata((("x-events", "3"),))


def put(request, context):
    arrived("Put", context)
    return b"stored"


def mine(request, context):
    arrived("Mine", context)
    return b"mine"


def slow(request, context):
    arrived("Slow", context)
    done = threading.Event()
    context.add_callback(done.set)
    with lock:
        if released.is_set():
            done.set()
        waiting.append(done)
    done.wait(60)
    return b"late"


def release_on_stdin():
    for line in sys.stdin:
        if line.strip() == "release":
            with lock:
                released.set()
                for w in waiting:
                    w.set()


def main():
    unary = lambda f: grpc.unary_unary_rpc_method_handler(f)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Get": unary(get),
            "Watch": grpc.unary_stream_rpc_method_handler(watch),
            "Put": unary(put),
            "Mine": unary(mine),
            "Slow": unary(slow),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    threading.Thread(target=release_on_stdin, daemon=True).start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

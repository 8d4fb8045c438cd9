#!/usr/bin/env python3
"""A client of the provider socket built on PyPI's grpcio, i.e. gRPC C-core.

C-core behaves like grpc-go where it matters here: it sends its connection
preface and SETTINGS, then waits for the server's SETTINGS before any request.
It runs with the test bed's venv (scripts/testbed.sh install; VCP_PYTHON) and
generates its stubs from crates/proto/proto/provider.proto at run time, into a temporary
directory, with grpcio-tools.

Usage:
  vcp_driver_client.py --socket PATH [--authority default|localhost|path] [--timeout 10]
                       COMMAND [options]

The target is always unix:<path>. --authority chooses what C-core sends as
:authority (checked on the wire by tests/real_clients.rs):
  default     C-core's own choice for a unix target: the path %-encoded, without
              its leading slash (tmp%2Fdir%2Fvault.sock)
  localhost   grpc.default_authority=localhost (what driver v1.6 sends)
  path        grpc.default_authority=<the socket path> (what drivers before v1.6
              send)

Commands and output are those of testbed/go-driver (one JSON document on
stdout): version; mount [--request FILE]; rotate [--request FILE] [--then FILE];
concurrent [-n 20] [--request FILE]; bench [-n 200] [--warmup 20] [--request FILE];
serve --request FILE (one call per stdin line, "mount" or "version", one outcome
line each, until EOF).
A call's outcome is {"latencyMs": float, "response": {...}} or
{"latencyMs": float, "status": {"code": int, "name": str, "message": str}}.
Exit status: 0 when every call succeeded, 3 when a call failed, 2 on bad usage,
1 when the request or the proto cannot be read.
"""

import argparse
import atexit
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import grpc
from google.protobuf import json_format

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.join(HERE, "..", "..", "crates", "proto", "proto", "provider.proto")

# The driver's method config: wait for a ready connection, retry UNAVAILABLE
# up to 3 attempts with a 1 s .. 10 s backoff.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "v1alpha1.CSIDriverProvider"}],
                "waitForReady": True,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "1s",
                    "maxBackoff": "10s",
                    "backoffMultiplier": 1.1,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
# The driver's default --max-call-recv-msg-size.
MAX_RECV = 4 * 1024 * 1024


def load_stubs(proto):
    """Generates provider_pb2 and provider_pb2_grpc into a temporary directory."""
    from grpc_tools import protoc

    proto = os.path.abspath(proto)
    if not os.path.isfile(proto):
        die(1, f"proto file {proto} not found")
    out = tempfile.mkdtemp(prefix="vcp-pystubs-")
    atexit.register(shutil.rmtree, out, True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{os.path.dirname(proto)}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            proto,
        ]
    )
    if rc != 0:
        die(1, f"grpc_tools.protoc failed on {proto} (exit {rc})")
    sys.path.insert(0, out)
    name = os.path.splitext(os.path.basename(proto))[0]
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")


def die(code, message):
    print(f"vcp_driver_client: {message}", file=sys.stderr)
    sys.exit(code)


def channel(args):
    """One channel, and so one connection of its own (no shared subchannel pool)."""
    options = [
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.max_receive_message_length", MAX_RECV),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if args.authority == "localhost":
        options.append(("grpc.default_authority", "localhost"))
    elif args.authority == "path":
        options.append(("grpc.default_authority", args.socket))
    return grpc.insecure_channel("unix:" + args.socket, options=options)


def ms(seconds):
    return round(seconds * 1000.0, 3)


def outcome(start, call):
    try:
        response = call()
    except grpc.RpcError as err:
        code = err.code()
        return {
            "latencyMs": ms(time.monotonic() - start),
            "status": {"code": code.value[0], "name": code.name, "message": err.details() or ""},
        }, None
    return {
        "latencyMs": ms(time.monotonic() - start),
        "response": json_format.MessageToDict(response),
    }, response


class Client:
    def __init__(self, args, pb2, pb2_grpc):
        self.args = args
        self.pb2 = pb2
        self.channel = channel(args)
        self.stub = pb2_grpc.CSIDriverProviderStub(self.channel)

    def version(self):
        start = time.monotonic()
        return outcome(
            start,
            lambda: self.stub.Version(
                self.pb2.VersionRequest(version="v1alpha1"),
                timeout=self.args.timeout,
                wait_for_ready=True,
            ),
        )

    def mount(self, request):
        start = time.monotonic()
        return outcome(
            start,
            lambda: self.stub.Mount(request, timeout=self.args.timeout, wait_for_ready=True),
        )

    def close(self):
        self.channel.close()


def read_request(pb2, path):
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as err:
        die(1, f"reading the request from {path}: {err}")
    request = pb2.MountRequest()
    try:
        json_format.Parse(text, request)
    except json_format.ParseError as err:
        die(1, f"the request in {path} is not a MountRequest in proto3 JSON: {err}")
    return request


def emit(value):
    json.dump(value, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def finish(*calls):
    sys.exit(3 if any("status" in c for c in calls) else 0)


def cmd_version(args, pb2, pb2_grpc):
    client = Client(args, pb2, pb2_grpc)
    out, _ = client.version()
    client.close()
    emit(out)
    finish(out)


def cmd_mount(args, pb2, pb2_grpc):
    request = read_request(pb2, args.request)
    client = Client(args, pb2, pb2_grpc)
    out, _ = client.mount(request)
    client.close()
    emit(out)
    finish(out)


def cmd_rotate(args, pb2, pb2_grpc):
    first = read_request(pb2, args.request)
    second = read_request(pb2, args.then) if args.then else first
    client = Client(args, pb2, pb2_grpc)
    out1, response = client.mount(first)
    calls = [out1]
    if response is not None:
        following = pb2.MountRequest()
        following.CopyFrom(second)
        del following.current_object_version[:]
        following.current_object_version.extend(response.object_version)
        out2, _ = client.mount(following)
        calls.append(out2)
    client.close()
    emit({"calls": calls})
    finish(*calls)


def cmd_concurrent(args, pb2, pb2_grpc):
    request = read_request(pb2, args.request)
    n = args.n or 20
    results = [None] * n
    gate = threading.Barrier(n + 1)

    def one(i):
        gate.wait()
        client = Client(args, pb2, pb2_grpc)
        version, _ = client.version()
        mount, _ = client.mount(request)
        client.close()
        results[i] = {"version": version, "mount": mount}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start = time.monotonic()
    gate.wait()
    for t in threads:
        t.join()
    emit({"connections": results, "wallMs": ms(time.monotonic() - start)})
    finish(*[c for r in results for c in (r["version"], r["mount"])])


def cmd_bench(args, pb2, pb2_grpc):
    request = read_request(pb2, args.request)
    n = args.n or 200
    client = Client(args, pb2, pb2_grpc)
    for i in range(args.warmup):
        out, _ = client.mount(request)
        if "status" in out:
            emit({"failed": out, "phase": "warmup", "call": i})
            sys.exit(3)
    latencies = []
    for i in range(n):
        out, _ = client.mount(request)
        if "status" in out:
            emit({"failed": out, "phase": "timed", "call": i})
            sys.exit(3)
        latencies.append(out["latencyMs"])
    client.close()
    ordered = sorted(latencies)

    def at(q):
        return ordered[round((len(ordered) - 1) * q)] if ordered else 0.0

    emit(
        {
            "n": n,
            "warmup": args.warmup,
            "latenciesMs": latencies,
            "p50Ms": at(0.5),
            "p90Ms": at(0.9),
            "p99Ms": at(0.99),
            "meanMs": round(statistics.fmean(latencies), 3) if latencies else 0.0,
            "minMs": at(0.0),
            "maxMs": at(1.0),
        }
    )


def cmd_serve(args, pb2, pb2_grpc):
    if args.request == "-":
        die(2, "serve reads its commands from stdin, so it needs --request FILE")
    request = read_request(pb2, args.request)
    client = Client(args, pb2, pb2_grpc)
    for line in sys.stdin:
        command = line.strip()
        if command == "mount":
            out, _ = client.mount(request)
        elif command == "version":
            out, _ = client.version()
        else:
            die(2, f"serve: unknown command {command!r} (want mount or version)")
        emit(out)
    client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", required=True, help="the provider's unix socket")
    parser.add_argument("--authority", choices=["default", "localhost", "path"], default="default")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
    parser.add_argument("--proto", default=DEFAULT_PROTO, help="provider.proto to generate stubs from")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("version")
    for name in ("mount", "rotate", "concurrent", "bench", "serve"):
        sub = commands.add_parser(name)
        sub.add_argument("--request", default="-", help="MountRequest as proto3 JSON (- for stdin)")
        if name == "rotate":
            sub.add_argument("--then", default="", help="the second request (default: the first)")
        if name in ("concurrent", "bench"):
            sub.add_argument("-n", type=int, default=0, help="connections (concurrent, 20) or timed calls (bench, 200)")
        if name == "bench":
            sub.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    pb2, pb2_grpc = load_stubs(args.proto)
    handler = {
        "version": cmd_version,
        "mount": cmd_mount,
        "rotate": cmd_rotate,
        "concurrent": cmd_concurrent,
        "bench": cmd_bench,
        "serve": cmd_serve,
    }[args.command]
    handler(args, pb2, pb2_grpc)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A grpcio client for tests/grpc.rs: reads one JSON object on stdin,

  {"target": "localhost:PORT", "ca": PEM path, "cert": PEM path, "key": PEM path,
   "calls": [{"method": "/pkg.Service/Method", "kind": "unary" | "stream",
              "request": "text", "timeout": seconds (optional),
              "metadata": [[key, value], ...] (optional)}]}

makes every call on one mTLS channel (client certificate), in order, and
prints one JSON list: per call its code (the grpc.StatusCode name), details,
responses (as text), initial and trailing metadata."""
import json
import sys

import grpc


def pairs(md):
    return [[k, v if isinstance(v, str) else v.decode("latin-1")] for k, v in (md or ())]


def call(channel, spec):
    kind = spec.get("kind", "unary")
    method = spec["method"]
    request = spec.get("request", "").encode()
    kwargs = {"metadata": [tuple(kv) for kv in spec.get("metadata", [])]}
    if "timeout" in spec:
        kwargs["timeout"] = spec["timeout"]
    out = {"method": method, "responses": []}
    try:
        if kind == "stream":
            rpc = channel.unary_stream(method)(request, **kwargs)
            for message in rpc:
                out["responses"].append(message.decode())
        else:
            response, rpc = channel.unary_unary(method).with_call(request, **kwargs)
            out["responses"].append(response.decode())
        out["code"] = rpc.code().name
        out["details"] = rpc.details()
        out["initial"] = pairs(rpc.initial_metadata())
        out["trailing"] = pairs(rpc.trailing_metadata())
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
        out["initial"] = pairs(e.initial_metadata())
        out["trailing"] = pairs(e.trailing_metadata())
    return out


def main():
    spec = json.load(sys.stdin)
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(spec["ca"]),
        private_key=read(spec["key"]),
        certificate_chain=read(spec["cert"]),
    )
    with grpc.secure_channel(spec["target"], creds) as channel:
        results = [call(channel, c) for c in spec["calls"]]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()

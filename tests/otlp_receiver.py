#!/usr/bin/env python3
"""An OTLP profiles receiver for amprof's tests, built on code that is not amprof's.

It decodes requests with PyPI's `opentelemetry-proto` (generated from opentelemetry-proto
v1.10.0, the release amprof speaks) and serves them over OTLP/HTTP (`http.server`) or OTLP/gRPC
(`grpcio`), bound to 127.0.0.1 on a free port, which it prints on its first line of output.

Every attempt is appended to OUT/attempts.jsonl (time, headers or metadata, bytes, and the
fault injected, if any). Every accepted request is checked against the specification's rules
(dictionary zero entries, every index in range, one shape of sample) and written resolved, as
OUT/request-NNNN.json: each profile with its resource, times, types and samples, each sample's
frames named through the dictionary, leaf first. `--decode FILE` prints the same for one
request body written by `amprof push --dry-run` and exits.

Faults (`--fault`, repeatable) are used up one per attempt, in order:
  HTTP  `503`, `429:2` (Retry-After: 2), `400`, `hang:3` (answer 200 after 3 s)
  gRPC  `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `RESOURCE_EXHAUSTED:2` (RetryInfo of 2 s), ...
`--partial N:MESSAGE` answers every accepted request with a partial success.
`--tls CERT KEY` serves TLS. `--port N` listens on N (a restarted receiver takes its old port
back). `--quick` only decodes requests (no resolving, no checks), for
timing amprof rather than this script.
"""

import argparse
import concurrent.futures
import gzip
import http.server
import json
import os
import ssl
import sys
import threading
import time

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as service,
    profiles_service_pb2_grpc as service_grpc,
)

HTTP_PATH = "/v1development/profiles"
LOCK = threading.Lock()


def any_value(value, strings):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value_strindex":
        return strings[value.string_value_strindex]
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind in ("array_value", "kvlist_value"):
        return str(getattr(value, kind))
    return getattr(value, kind)


def resolve(request):
    """The request with every index followed, and what breaks the specification's rules."""
    d = request.dictionary
    errors = []

    def check(condition, message):
        if not condition:
            errors.append(message)
        return condition

    strings = list(d.string_table)
    check(request.HasField("dictionary"), "no dictionary")
    check(strings[:1] == [""], "string_table[0] is not the empty string")
    for name in ("mapping_table", "location_table", "function_table", "link_table",
                 "attribute_table", "stack_table"):
        table = getattr(d, name)
        if check(len(table) > 0, f"{name} has no zero entry"):
            check(table[0].ByteSize() == 0, f"{name}[0] is not the zero value")

    def at(table, index, what):
        if check(0 <= index < len(table), f"{what} index {index} out of range"):
            return table[index]
        return None

    def string(index, what):
        return at(strings, index, what) or ""

    def attributes(indices, what):
        out = {}
        for i in indices:
            a = at(d.attribute_table, i, f"{what} attribute")
            if a is None:
                continue
            key = string(a.key_strindex, "attribute key")
            check(key not in out, f"{what}: attribute {key} twice")
            out[key] = any_value(a.value, strings)
        return out

    def mapping(index):
        m = at(d.mapping_table, index, "mapping")
        if m is None or index == 0:
            return None
        return {
            "filename": string(m.filename_strindex, "mapping filename"),
            "memory_start": m.memory_start,
            "memory_limit": m.memory_limit,
            "file_offset": m.file_offset,
            "attributes": attributes(m.attribute_indices, "mapping"),
        }

    def frames(stack_index):
        stack = at(d.stack_table, stack_index, "stack")
        out = []
        for li in (stack.location_indices if stack is not None else []):
            loc = at(d.location_table, li, "location")
            if loc is None:
                continue
            check(li != 0, "a stack refers to location 0")
            attrs = attributes(loc.attribute_indices, "location")
            check(len(loc.lines) > 0, "a location without lines")
            for line in loc.lines:  # innermost first
                f = at(d.function_table, line.function_index, "function")
                if f is None:
                    continue
                out.append({
                    "name": string(f.name_strindex, "function name"),
                    "file": string(f.filename_strindex, "function file"),
                    "line": line.line,
                    "kernel": attrs.get("profile.frame.type") == "kernel",
                    "address": loc.address,
                    "mapping": mapping(loc.mapping_index),
                })
        return out

    profiles = []
    for rp in request.resource_profiles:
        resource = {}
        for kv in rp.resource.attributes:
            check(kv.key not in resource, f"resource attribute {kv.key} twice")
            resource[kv.key] = any_value(kv.value, strings)
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                samples = []
                sample_type = [string(p.sample_type.type_strindex, "type"),
                               string(p.sample_type.unit_strindex, "unit")]
                for s in p.samples:
                    check(len(s.timestamps_unix_nano) > 0, "a sample without timestamps")
                    if sample_type == ["samples", "count"]:
                        check(len(s.values) == 0, "a sample with values (the CPU shape has none)")
                    else:
                        # Off-CPU time: one value per timestamp, the same event at each index.
                        check(len(s.values) == len(s.timestamps_unix_nano),
                              "a sample whose values and timestamps differ in number")
                    for t in s.timestamps_unix_nano:
                        check(p.time_unix_nano <= t < p.time_unix_nano + p.duration_nano,
                              "a timestamp outside its profile")
                    samples.append({
                        "frames": frames(s.stack_index),
                        "attributes": attributes(s.attribute_indices, "sample"),
                        "timestamps": list(s.timestamps_unix_nano),
                        "values": list(s.values),
                    })
                profiles.append({
                    "resource": resource,
                    "scope": {"name": sp.scope.name, "version": sp.scope.version},
                    "time_unix_nano": p.time_unix_nano,
                    "duration_nano": p.duration_nano,
                    "sample_type": sample_type,
                    "period_type": [string(p.period_type.type_strindex, "type"),
                                    string(p.period_type.unit_strindex, "unit")],
                    "period": p.period,
                    "profile_id": p.profile_id.hex(),
                    "samples": samples,
                })
    return {"profiles": profiles, "errors": errors, "encoded_bytes": request.ByteSize()}


class Receiver:
    def __init__(self, out, faults, partial, quick):
        self.quick = quick
        self.out = out
        self.faults = list(faults)
        self.partial = partial
        # A receiver restarted into the same directory numbers on from the requests there.
        self.accepted = len([f for f in os.listdir(out) if f.startswith("request-")])

    def next_fault(self):
        with LOCK:
            return self.faults.pop(0) if self.faults else None

    def log_attempt(self, headers, size, fault):
        with LOCK, open(os.path.join(self.out, "attempts.jsonl"), "a") as f:
            f.write(json.dumps({"time": time.time(), "headers": headers, "bytes": size,
                                "fault": fault}) + "\n")

    def accept(self, request, headers, wire_bytes):
        if self.quick:
            resolved = {"profiles": sum(len(sp.profiles) for rp in request.resource_profiles
                                        for sp in rp.scope_profiles),
                        "encoded_bytes": request.ByteSize()}
        else:
            resolved = resolve(request)
        resolved["headers"] = headers
        resolved["wire_bytes"] = wire_bytes
        with LOCK:
            self.accepted += 1
            path = os.path.join(self.out, f"request-{self.accepted:04}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(resolved, f)
        os.rename(path + ".tmp", path)
        response = service.ExportProfilesServiceResponse()
        if self.partial:
            rejected, _, message = self.partial.partition(":")
            response.partial_success.rejected_profiles = int(rejected)
            response.partial_success.error_message = message
        return response


def rpc_status(code, message, retry_seconds=None):
    status = status_pb2.Status(code=code, message=message)
    if retry_seconds is not None:
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_seconds))
        detail = any_pb2.Any()
        detail.Pack(info)
        status.details.append(detail)
    return status


def serve_http(receiver, tls):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body=b"", content_type="application/x-protobuf", extra=()):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            fault = receiver.next_fault()
            receiver.log_attempt(headers, len(body), fault)
            if self.path != HTTP_PATH:
                return self.reply(404, b"no such path", "text/plain")
            if fault and fault.startswith("hang:"):
                time.sleep(float(fault.split(":")[1]))
            elif fault:
                code, _, after = fault.partition(":")
                extra = [("Retry-After", after)] if after else []
                status = rpc_status(14 if code in ("502", "503", "504") else 3,
                                    f"injected HTTP {code}")
                return self.reply(int(code), status.SerializeToString(), extra=extra)
            if headers.get("content-type") != "application/x-protobuf":
                return self.reply(415, b"want application/x-protobuf", "text/plain")
            wire = len(body)
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                request = service.ExportProfilesServiceRequest.FromString(body)
            except Exception as e:  # noqa: BLE001 - any decoding failure is the sender's
                return self.reply(400, rpc_status(3, f"undecodable: {e}").SerializeToString())
            response = receiver.accept(request, headers, wire)
            self.reply(200, response.SerializeToString())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def serve_grpc(receiver, tls):
    class Service(service_grpc.ProfilesServiceServicer):
        def Export(self, request, context):
            headers = {k: v for k, v in context.invocation_metadata()
                       if not k.endswith("-bin")}
            fault = receiver.next_fault()
            receiver.log_attempt(headers, request.ByteSize(), fault)
            if fault:
                name, _, seconds = fault.partition(":")
                code = getattr(grpc.StatusCode, name)
                status = rpc_status(code.value[0], f"injected {name}",
                                    int(seconds) if seconds else None)
                context.set_trailing_metadata(
                    (("grpc-status-details-bin", status.SerializeToString()),))
                context.abort(code, status.message)
            return receiver.accept(request, headers, request.ByteSize())

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    service_grpc.add_ProfilesServiceServicer_to_server(Service(), server)
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(f"127.0.0.1:{receiver.port}", credentials)
    else:
        port = server.add_insecure_port(f"127.0.0.1:{receiver.port}")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--out")
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--partial")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--decode", metavar="FILE")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--port", type=int, default=0,
                        help="the port to listen on (default: a free one)")
    args = parser.parse_args()
    if args.decode:
        with open(args.decode, "rb") as f:
            body = f.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        json.dump(resolve(service.ExportProfilesServiceRequest.FromString(body)), sys.stdout)
        return
    os.makedirs(args.out, exist_ok=True)
    receiver = Receiver(args.out, args.fault, args.partial, args.quick)
    receiver.port = args.port
    (serve_grpc if args.protocol == "grpc" else serve_http)(receiver, args.tls)


if __name__ == "__main__":
    main()

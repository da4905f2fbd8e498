#!/usr/bin/env python3
"""hello: busbar's hello-world adapter in Python, with the standard library only.

It does what Powerstrip's reference adapter, powerstrip-slowreq, did: wait a while (1 s by
default), then pass the call on unchanged, on pre-hooks and post-hooks alike. The protocol is
HTTP and JSON: busbar POSTs a document whose "Type" is "pre-hook" or "post-hook", and the
adapter answers with "ModifiedClientRequest" or "ModifiedServerResponse". Bodies are JSON
*text inside a string* (json.dumps of the Docker document), or null.

It speaks protocol versions 1 and 2 (docs/protocol.md): a call with
"PowerstripProtocolVersion": 2 (the chain entry says `protocol: 2`) also carries the headers
and a "Caller", and is answered with version 2; a v2 pre-hook also gets a call of "Type":
"unwind" when the request fails after it, answered {} (hello changed nothing, so there is
nothing to undo).

    python3 hello.py --port 8080 --delay 1.0

and in adapters.yml:

    endpoints:
      "POST /*/containers/create":
        pre: [hello]
    adapters:
      hello: http://127.0.0.1:8080/hello

Check it with `busbarctl adapter test http://127.0.0.1:8080/hello` (add `--protocol 2` for
version 2).

Each line it prints ends with the request's W3C trace id (`trace_id=...`, from the
`traceparent` header busbar sends) and the traceparent itself, so `grep TRACE_ID` over
busbar's logs and this one shows the whole path of a `docker run`.
"""

import argparse
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# W3C Trace Context, version 00: lower-case hex, ids not all zero. Anything else is no trace.
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def trace_of(traceparent):
    """`trace_id=... traceparent=...` for a log line, or "" without a valid traceparent."""
    m = TRACEPARENT.match(traceparent or "")
    if not m or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return ""
    return f" trace_id={m.group(1)} traceparent={traceparent}"


def answer(call, delay, node, trace=""):
    """The reply to one hook call (a dict), or raise ValueError saying what is wrong.
    `node` is the node that runs the hook (busbar's X-Busbar-Node header), if any; `trace`
    ends each line printed (see trace_of)."""
    kind = call.get("Type")
    client = call.get("ClientRequest")
    if not isinstance(client, dict):
        raise ValueError("the call has no ClientRequest object")
    # Version 2 says who calls in "Caller" (its "Node" is null on a standalone agent).
    version = 2 if call.get("PowerstripProtocolVersion") == 2 else 1
    caller_node = (call.get("Caller") or {}).get("Node") or {}
    node = caller_node.get("Name") or node or "this host"
    if kind == "unwind":
        failure = call.get("Failure") or {}
        print(f"hello: unwind {client.get('Method')} {client.get('Request')}: failed with "
              f"{failure.get('Code')} at the {failure.get('Stage')}; nothing to undo{trace}", flush=True)
        return {}
    time.sleep(delay)
    if kind == "pre-hook":
        print(f"hello: pre-hook {client.get('Method')} {client.get('Request')} on {node}{trace}", flush=True)
        return {
            "PowerstripProtocolVersion": version,
            "ModifiedClientRequest": {
                "Method": client.get("Method"),
                "Request": client.get("Request"),
                "Body": client.get("Body"),
            },
        }
    if kind == "post-hook":
        server = call.get("ServerResponse")
        if not isinstance(server, dict):
            raise ValueError("a post-hook call needs a ServerResponse object")
        print(f"hello: post-hook {client.get('Method')} {client.get('Request')} answered {server.get('Code')}{trace}", flush=True)
        return {
            "PowerstripProtocolVersion": version,
            "ModifiedServerResponse": {
                "ContentType": server.get("ContentType"),
                "Body": server.get("Body"),
                "Code": server.get("Code"),
            },
        }
    raise ValueError('Type must be "pre-hook", "post-hook" or "unwind"')


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: busbar's agent reuses connections
    wbufsize = -1  # head and body in one write (two small writes cost a delayed ACK, ~40 ms)
    delay = 1.0

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            call = json.loads(self.rfile.read(length))
            if not isinstance(call, dict):
                raise ValueError("the call is not a JSON object")
            trace = trace_of(self.headers.get("traceparent"))
            status, reply = 200, answer(call, self.delay, self.headers.get("X-Busbar-Node"), trace)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            # Errors as Docker words them: the docker CLI prints the message.
            status, reply = 400, {"message": f"hello: {e}"}
        body = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # one line per call is printed by answer()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds to wait per call")
    args = parser.parse_args()
    Handler.delay = args.delay
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    print(f"hello: listening on http://{host}:{port}/hello", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

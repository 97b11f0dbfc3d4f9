"""Parses recorded webhook requests as CloudEvents with the reference `cloudevents` SDK
(independently of the daemon's own encoder) and prints what the SDK read.

Usage: parse_cloudevents.py < requests.json

requests.json is a JSON list of {"headers": {name: value}, "body_base64": "..."}. A request with
Content-Type application/cloudevents-batch+json is a JSON array of structured events: each
element is parsed by the SDK's structured-mode reader. Any other request is parsed by the SDK's
HTTP binding, which detects binary (ce-* headers) or structured mode.

Prints one JSON document: a list (one entry per request) of lists of events, each event
{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "extensions",
and "data" (text), "data_json" (parsed JSON) or "data_base64" (bytes)}. Exits 0 when every
request parsed, 1 when the SDK rejected one (the error is printed), 2 on bad usage.
"""

import base64
import json
import sys

from cloudevents.core.bindings.http import HTTPMessage, from_http_event, from_structured_event

BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"
REQUIRED = ("specversion", "id", "source", "type")


def describe(event) -> dict:
    attributes = dict(event.get_attributes())
    for name in REQUIRED:
        if not attributes.get(name):
            raise ValueError(f"the SDK returned an event without {name}: {attributes}")
    time = event.get_time()
    out = {
        "specversion": event.get_specversion(),
        "id": event.get_id(),
        "source": event.get_source(),
        "type": event.get_type(),
        "subject": event.get_subject(),
        "time": time.isoformat() if time is not None else None,
        "datacontenttype": event.get_datacontenttype(),
        "extensions": {
            k: v for k, v in attributes.items()
            if k not in REQUIRED + ("subject", "time", "datacontenttype", "dataschema")
        },
    }
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):
        out["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif isinstance(data, str):
        out["data"] = data
    else:
        out["data_json"] = data
    return out


def parse(request: dict) -> list:
    headers = {k.lower(): v for k, v in request["headers"].items()}
    body = base64.b64decode(request["body_base64"])
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == BATCH:
        elements = json.loads(body)
        if not isinstance(elements, list):
            raise ValueError("a batch body must be a JSON array")
        return [
            describe(from_structured_event(HTTPMessage(
                {"content-type": STRUCTURED}, json.dumps(element).encode("utf-8"))))
            for element in elements
        ]
    return [describe(from_http_event(HTTPMessage(headers, body)))]


def main() -> int:
    if len(sys.argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        requests = json.load(sys.stdin)
    except json.JSONDecodeError as err:
        print(f"stdin is not JSON: {err}", file=sys.stderr)
        return 2
    results = []
    for i, request in enumerate(requests):
        try:
            results.append(parse(request))
        except Exception as err:  # the SDK's own error types vary between versions
            print(f"request {i}: the cloudevents SDK rejected it: {type(err).__name__}: {err}",
                  file=sys.stderr)
            return 1
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

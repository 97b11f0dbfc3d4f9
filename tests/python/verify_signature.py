"""Verifies Standard Webhooks signatures of recorded webhook requests with the reference
`standardwebhooks` library, independently of the daemon's own signing code.

Usage: verify_signature.py SECRET < requests.json

requests.json is a JSON list of {"headers": {name: value}, "body_base64": "..."}, one entry per
recorded request. Prints one JSON line per request ({"webhook_id": ..., "ok": true} or
{"ok": false, "error": ...}) and exits 0 when every signature verifies, 1 when one does not, and
2 on bad usage.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        requests = json.load(sys.stdin)
    except json.JSONDecodeError as err:
        print(f"stdin is not JSON: {err}", file=sys.stderr)
        return 2
    if not isinstance(requests, list) or not requests:
        print("expected a non-empty JSON list of requests", file=sys.stderr)
        return 2
    hook = Webhook(sys.argv[1])
    failed = 0
    for request in requests:
        headers = request["headers"]
        body = base64.b64decode(request["body_base64"])
        try:
            # json_parse=False: the signature covers the exact bytes, whatever the format.
            hook.verify(body, headers, json_parse=False)
            print(json.dumps({"webhook_id": headers.get("webhook-id"), "ok": True}))
        except WebhookVerificationError as err:
            failed += 1
            print(json.dumps({"webhook_id": headers.get("webhook-id"), "ok": False,
                              "error": str(err)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

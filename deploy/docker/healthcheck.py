#!/usr/bin/env python3
"""Container healthcheck: exit 0 when GET http://127.0.0.1:PORT/health/ready answers 2xx.

Usage: cdb-healthcheck PORT [PATH]
The slim image has no curl; this uses only the standard library.
"""

import sys
import urllib.error
import urllib.request


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: cdb-healthcheck PORT [PATH]", file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    path = sys.argv[2] if len(sys.argv) > 2 else "/health/ready"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - fixed http URL
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The one helper the client scripts share: a named check that stops the script on failure."""

import sys


def check(name, condition, detail=""):
    """Prints `ok NAME`, or `FAIL NAME: DETAIL` and exits non-zero."""
    if not condition:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")

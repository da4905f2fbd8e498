#!/usr/bin/env python3
"""Writes cases.tsv beside this file: what Python's own fnmatch says, for busbar's matcher.

Powerstrip matched each endpoint key of adapters.yml with fnmatch against "<METHOD> <path>".
busbar's matcher (chains/src/matcher.rs) must agree on every case here; chains/tests/fnmatch.rs
checks it. Rerun after changing this script (the output is committed, so the test needs no
Python):

    python3 chains/tests/fnmatch/cases.py

Two kinds of rows, tab-separated, no header:

    fnmatch  PATTERN  NAME  EXPECTED   fnmatch.fnmatchcase(NAME, PATTERN), EXPECTED 1 or 0
    key      KEY      METHOD PATH  EXPECTED   a whole request against an endpoint key, with
                                              busbar's unversioned-path rule (see match_key)

Deterministic: a fixed seed, the standard library only.
"""

import fnmatch
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Characters that mean something to fnmatch, to re, to glob crates, or to nobody.
ALPHABET = list("ab/z-]![^*?\\{},.v1 &~|") + ["\u00e9"]
NAME_CHARS = list("ab/z-]![^*?\\{},.v1 &~|") + ["\u00e9", "c", "A"]

# Patterns written by hand: every fnmatch form, and the edges of classes.
HAND = [
    "", "*", "**", "?", "a", "a*", "*a", "a*b", "a?b", "*a*", "a**b",
    "[a]", "[ab]", "[!a]", "[!ab]", "[a-z]", "[!a-z]", "[z-a]", "[!z-a]", "[a-]", "[-a]",
    "[!-a]", "[!a-]", "[]]", "[!]]", "[]a]", "[!]a]", "[]-a]", "[a-c-e]", "[b-a-c]",
    "[a-bc-a]", "[^a]", "[^]", "[!^]", "[\\]", "[\\-a]", "[a\\]", "[&&]", "[~~]", "[||]",
    "[[]", "[[a]", "[a[]", "[", "a[", "[a", "[!", "[!]", "[]", "a]", "]", "[a-a]", "[--/]",
    "[!--/]", "[*]", "[?]", "[!*]", "{a,b}", "\\", "a\\*", "/**/b", "**/x", "[a-\u00e9]",
    "[\u00e9-a]", "?\u00e9", "[!\u00e9]", "a,b",
]

# Endpoint keys as adapters.yml files write them (Powerstrip's README, tests and adapters).
KEYS = [
    "POST /*/containers/create", "* */containers/create", "POST */containers/create",
    "* /*/containers/*/start", "POST /*/containers/*/start", "POST /*/containers/*/restart",
    "DELETE /*/containers/*", "POST /containers/*/start", "DELETE /containers/*",
    "POST /v1.16/containers/create", "GET /v1.16/images/*/json", "* /v*/images/*/json",
    "* *", "*", "GET /info", "POST /v[12]/containers/create", "POST /*/containers/*/attach",
    "* /*/containers/*/stop", "POST /*/containers/*/stop", "P* /*/containers/create",
    "/containers/create", "post /*/containers/create", "*/containers/create",
    "* /*/*", "GET /*/version", "GET /*/v1.41/info", "* /containers/*", "[PG]* /*/info",
    "[!G]* /*", "?OST /*/containers/create", "POST /*/containers/[abc]*/start",
    "* /**/create", "POST  /x", "* /a b", "GET /*/containers/json",
]

REQUESTS = [
    ("POST", "/v1.41/containers/create"), ("POST", "/containers/create"),
    ("POST", "/v1.16/containers/create"), ("GET", "/v1.16/containers/create"),
    ("POST", "/v1.41/containers/abc/start"), ("POST", "/containers/abc/start"),
    ("POST", "/containers/a/b/start"), ("POST", "/v1.41/containers/abc/stop"),
    ("DELETE", "/v1.41/containers/abc"), ("DELETE", "/containers/abc"),
    ("GET", "/v1.41/containers/json"), ("GET", "/containers/json"),
    ("GET", "/v1.16/images/busybox/json"), ("GET", "/v2/images/alpha/json"),
    ("GET", "/images/alpha/json"), ("GET", "/info"), ("GET", "/v1.41/info"),
    ("GET", "/version"), ("GET", "/_ping"), ("HEAD", "/_ping"), ("PUT", "/v1.41/info"),
    ("POST", "/v2/containers/create"), ("POST", "/v1/containers/create"),
    ("POST", "/containers/x/create"), ("POST", "/v1.41/containers/created"),
    ("POST", "/v1.41/containers/beef/start"), ("POST", "/v1.41/containers/dead/start"),
    ("POST", "/x/v1.41/info"), ("GET", "/x/v1.41/info"), ("POST", "/v1.41/containers/abc/attach"),
    ("POST", "/a b"), ("POST", "/x"), ("PATCH", "/v1.41/containers/create"),
    ("POST", "/create"), ("GET", "/create"), ("POST", "/v1.41/create"),
]


def versioned(path):
    first = path[1:].split("/")[0] if path.startswith("/") else ""
    return re.fullmatch(r"v[0-9.]+", first) is not None


def match_key(key, method, path):
    """fnmatch on "<METHOD> <path>", plus busbar's rule: on an unversioned path, a key whose
    part after its first space starts with "/*/" also matches without that leading "/*"."""
    subject = f"{method} {path}"
    if fnmatch.fnmatchcase(subject, key):
        return True
    head, sep, rest = key.partition(" ")
    if sep and rest.startswith("/*/") and not versioned(path):
        return fnmatch.fnmatchcase(subject, f"{head} {rest[2:]}")
    return False


def random_pattern(rng):
    pieces = []
    for _ in range(rng.randint(0, 6)):
        kind = rng.random()
        if kind < 0.45:
            pieces.append(rng.choice(ALPHABET))
        elif kind < 0.6:
            pieces.append("*")
        elif kind < 0.7:
            pieces.append("?")
        else:
            body = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4)))
            neg = "!" if rng.random() < 0.3 else ""
            close = "]" if rng.random() < 0.9 else ""
            pieces.append(f"[{neg}{body}{close}")
    return "".join(pieces)


def names_for(pattern, rng):
    """Names likely to match the pattern, and some that likely do not."""
    out = set()
    for _ in range(6):
        s = []
        for c in pattern:
            if c == "*":
                s.append("".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(0, 3))))
            elif c in "?[]!":
                s.append(rng.choice(NAME_CHARS))
            else:
                s.append(c)
        out.add("".join(s))
    for _ in range(4):
        out.add("".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(0, 5))))
    return sorted(out)


def main():
    rng = random.Random(18)
    rows = []
    patterns = HAND + [random_pattern(rng) for _ in range(260)]
    seen = set()
    for pattern in patterns:
        if pattern in seen:
            continue
        seen.add(pattern)
        for name in names_for(pattern, rng) + list("ab-]!^\\\u00e9/ "):
            rows.append(("fnmatch", pattern, name, int(fnmatch.fnmatchcase(name, pattern))))
    for key in KEYS:
        for method, path in REQUESTS:
            rows.append(("key", key, f"{method} {path}", int(match_key(key, method, path))))
    for row in rows:
        for field in row[1:3]:
            assert "\t" not in field and "\n" not in field, row
    out = os.path.join(HERE, "cases.tsv")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"# made by cases.py with Python {sys.version.split()[0]}; do not edit\n")
        for kind, a, b, expected in rows:
            f.write(f"{kind}\t{a}\t{b}\t{expected}\n")
    matched = sum(r[3] for r in rows)
    print(f"{out}: {len(rows)} cases, {matched} matching", file=sys.stderr)


if __name__ == "__main__":
    main()

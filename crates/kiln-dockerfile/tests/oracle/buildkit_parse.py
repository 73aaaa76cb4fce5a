"""BuildKit's Go Dockerfile parser, through its Python binding (PyPI
`dockerfile`), as an oracle for kiln's parser tests.

Reads a JSON array of Dockerfile texts on stdin; writes a JSON array with,
for each, {"ok": [command, ...]}, {"error": message} or
{"undecodable": true} when the binding cannot represent the answer. A command has the
fields of `dockerfile.Command`, heredocs as {name, file_descriptor, content}.
"""

import json
import sys

import dockerfile


def command(c):
    return {
        "cmd": c.cmd,
        "sub_cmd": c.sub_cmd,
        "json": c.json,
        "original": c.original,
        "start_line": c.start_line,
        "end_line": c.end_line,
        "flags": list(c.flags),
        "value": list(c.value),
        "heredocs": [
            {"name": h.name, "file_descriptor": h.file_descriptor, "content": h.content}
            for h in c.heredocs
        ],
    }


def main():
    out = []
    for text in json.load(sys.stdin):
        try:
            out.append({"ok": [command(c) for c in dockerfile.parse_string(text)]})
        except dockerfile.GoParseError as e:
            out.append({"error": str(e)})
        except UnicodeDecodeError:
            # The binding cannot return a Go string that is not valid UTF-8
            # (BuildKit splits some lines byte-wise); no answer to compare.
            out.append({"undecodable": True})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

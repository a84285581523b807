"""Reads YAML the way Kubernetes does: YAML 1.1 scalar rules, as go-yaml v2 (behind
sigs.k8s.io/yaml, which kubectl and the API server use) resolves them.

A plain `Off`, `yes` or `n` is a boolean there, not a string. PyYAML's SafeLoader is YAML 1.1;
two changes make it resolve like go-yaml v2: `y`/`Y`/`n`/`N` are booleans too, and timestamps
stay strings (go-yaml v2 keeps timestamp-looking scalars as strings when the target is untyped,
as it is for custom resources).

usage: python3 yaml11.py FILE...   prints {"FILE": [document, ...], ...} as JSON
       python3 yaml11.py -         reads a JSON list of YAML texts on stdin, prints a JSON list
                                   of document lists
"""
import json
import re
import sys

import yaml

BOOL = "tag:yaml.org,2002:bool"
TIMESTAMP = "tag:yaml.org,2002:timestamp"


class Loader(yaml.SafeLoader):
    pass


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(BOOL, re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))


def _bool(loader, node):
    return loader.construct_scalar(node).lower() in ("y", "yes", "true", "on")


Loader.add_constructor(BOOL, _bool)


def load_all(text):
    """Every non-empty document of `text`."""
    return [d for d in yaml.load_all(text, Loader=Loader) if d is not None]


def load_file(path):
    with open(path) as f:
        return load_all(f.read())


def main():
    if sys.argv[1:] == ["-"]:
        print(json.dumps([load_all(t) for t in json.load(sys.stdin)]))
    else:
        print(json.dumps({p: load_file(p) for p in sys.argv[1:]}))


if __name__ == "__main__":
    main()

"""Validates projectcalico.org/v3 documents against the openAPIV3Schema of our CRDs.

usage: python3 crd_validate.py CRD_DIR FILE...

kubernetes-validate only knows built-in kinds, so custom resources are checked here, the way
the API server does with `kubectl apply --validate=strict`: the version's structural schema,
with unknown fields rejected (wherever the schema lists properties and does not preserve
unknown fields). Files are read as Kubernetes reads them (YAML 1.1 scalars, yaml11.py): a
plain `Off` is a boolean. Exit status 1 and one line per problem when anything is invalid, or when a
document's kind has no CRD.
"""
import copy
import glob
import os
import sys

import jsonschema

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yaml11 import load_file  # noqa: E402


def strict(schema):
    """Copy of an OpenAPI schema that rejects fields it does not declare."""
    s = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(s)
    return s


def load_crds(crd_dir):
    schemas = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        crd = load_file(path)[0]
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            api_version = f"{group}/{v['name']}"
            schemas[(api_version, kind)] = strict(v["schema"]["openAPIV3Schema"])
    return schemas


def main():
    crd_dir, files = sys.argv[1], sys.argv[2:]
    schemas = load_crds(crd_dir)
    problems, checked = [], 0
    for path in files:
        docs = [d for d in load_file(path) if d]
        for i, doc in enumerate(docs, 1):
            key = (doc.get("apiVersion"), doc.get("kind"))
            where = f"{path}: document {i} ({key[1]} {doc.get('metadata', {}).get('name')!r})"
            schema = schemas.get(key)
            if schema is None:
                problems.append(f"{where}: no CRD for {key[0]} {key[1]}")
                continue
            checked += 1
            validator = jsonschema.Draft7Validator(schema)
            for err in validator.iter_errors(doc):
                field = ".".join(str(p) for p in err.absolute_path) or "<root>"
                problems.append(f"{where}: {field}: {err.message}")
    for p in problems:
        print(p)
    print(f"checked {checked} document(s) against CRD schemas, {len(problems)} problem(s)")
    sys.exit(1 if problems or checked == 0 else 0)


if __name__ == "__main__":
    main()

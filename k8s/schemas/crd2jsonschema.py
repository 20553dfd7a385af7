#!/usr/bin/env python3
"""Turn CustomResourceDefinitions into strict JSON schemas, one per version.

    python3 k8s/schemas/crd2jsonschema.py OUT_DIR CRD.yaml [CRD.yaml ...]

writes OUT_DIR/<group>/<kind>_<version>.json (lower-case kind, the layout
kubeconform and the CRDs catalog use) from each version's
`schema.openAPIV3Schema`, as JSON Schema 2020-12 (what kubernetes-validate
and check-jsonschema read):

- strict: an object schema that lists `properties` and says nothing of
  `additionalProperties` gets `additionalProperties: false`, unless it has
  `x-kubernetes-preserve-unknown-fields: true` (the API server keeps unknown
  fields there, and prunes or, with kubectl's default server-side field
  validation, rejects them elsewhere);
- OpenAPI 3.0 idioms become JSON Schema: `nullable: true` adds "null" to the
  type, a boolean `exclusiveMinimum`/`exclusiveMaximum` takes the bound's
  value, `x-kubernetes-int-or-string` is an integer or a string, and Go's
  `(?i)` inside a pattern is spelled out as both cases of each letter;
- `apiVersion` and `kind` must be the CRD's own and are required;
- descriptions and the other `x-kubernetes-*` keys are dropped. CEL rules
  (`x-kubernetes-validations`) are not checked: the API server does that.

Needs PyYAML (in check-deploy.sh's virtualenv). See README.md here for where
the vendored CRDs came from.
"""

import json
import pathlib
import sys

import yaml


def case_insensitive(pattern):
    """Go's inline `(?i)` (not valid mid-pattern in Python or ECMA-262
    regexes) spelled out: every ASCII letter becomes both of its cases."""
    out, escaped, in_class = [], False, False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "[":
            out.append(ch)
            in_class = True
        elif ch == "]":
            out.append(ch)
            in_class = False
        elif ch.isascii() and ch.isalpha():
            pair = ch.lower() + ch.upper()
            out.append(pair if in_class else f"[{pair}]")
        else:
            out.append(ch)
    return "".join(out)


def convert(node):
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "description" or (key.startswith("x-kubernetes-")):
            continue
        if key in ("properties", "patternProperties", "definitions", "$defs"):
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = convert(value) if isinstance(value, (dict, list)) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [convert(sub) for sub in value]
        elif key == "nullable":
            continue
        elif key == "pattern" and "(?i)" in value:
            out[key] = case_insensitive(value.replace("(?i)", ""))
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = out.get("anyOf", []) + [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), bool):
            if out[exclusive] and bound in out:
                out[exclusive] = out.pop(bound)
            else:
                del out[exclusive]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out_dir = pathlib.Path(argv[1])
    for path in argv[2:]:
        for crd in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                schema = convert(version["schema"]["openAPIV3Schema"])
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
                props["kind"] = {"type": "string", "enum": [kind]}
                schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
                schema["additionalProperties"] = False
                doc = {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "title": f"{kind} {group}/{version['name']} (strict, from {pathlib.Path(path).name})",
                    **schema,
                }
                target = out_dir / group / f"{kind.lower()}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
                print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv)

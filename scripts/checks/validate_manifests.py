#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests, leaving no object unchecked.

    validate_manifests.py --schemas k8s/schemas -k 1.27 -k 1.33 RENDER.yaml ...

For every object of every file (a `kubectl kustomize` output):

- built-in kinds: kubernetes-validate's strict schemas (unknown fields are
  errors) for each Kubernetes version given with -k;
- custom resources: the strict JSON schemas vendored under --schemas
  (`<group>/<kind>_<version>.json`, made by k8s/schemas/crd2jsonschema.py),
  and their metadata against ObjectMeta;
- an object with neither is an error, not a warning: nothing passes unchecked;
- Pod Security: a Namespace labelled `pod-security.kubernetes.io/enforce`
  `restricted` (or `baseline`) must hold only pod templates that the
  profile admits, as far as the manifests show it (the checks below follow
  https://kubernetes.io/docs/concepts/security/pod-security-standards/).

Exit 1 on any error. Runs in check-deploy.sh's virtualenv (kubernetes-validate,
jsonschema, PyYAML).
"""

import argparse
import json
import pathlib
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

WORKLOADS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}

# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}


def dig(obj, path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def pod_security_errors(pod, level):
    """What `level` (baseline or restricted) refuses in this pod spec."""
    errors = []
    containers = [("container", c) for c in pod.get("containers", [])]
    containers += [("initContainer", c) for c in pod.get("initContainers", [])]
    containers += [("ephemeralContainer", c) for c in pod.get("ephemeralContainers", [])]
    pod_sc = pod.get("securityContext") or {}
    # baseline
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            errors.append(f"{key}: true")
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            errors.append(f"volume {volume.get('name')}: hostPath")
    for kind, c in containers:
        sc = c.get("securityContext") or {}
        where = f"{kind} {c.get('name')}"
        if sc.get("privileged"):
            errors.append(f"{where}: privileged")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if level == "restricted":
            added -= {"NET_BIND_SERVICE"}
        elif added - BASELINE_CAPS:
            errors.append(f"{where}: adds capabilities {sorted(added - BASELINE_CAPS)}")
        if level == "restricted" and added:
            errors.append(f"{where}: adds capabilities {sorted(added)}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                errors.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            errors.append(f"{where}: procMount {sc['procMount']}")
    if level != "restricted":
        return errors
    # restricted
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            errors.append(f"volume {volume.get('name')}: {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_sc.get("runAsUser") == 0:
        errors.append("pod runAsUser: 0")
    for kind, c in containers:
        sc = c.get("securityContext") or {}
        where = f"{kind} {c.get('name')}"
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{where}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            errors.append(f"{where}: capabilities must drop ALL")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            errors.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            errors.append(f"{where}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", required=True, type=pathlib.Path)
    parser.add_argument("-k", "--kubernetes-version", action="append", required=True)
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    args = parser.parse_args()

    errors = 0
    for path in args.files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        namespaces = {
            d["metadata"]["name"]: (d["metadata"].get("labels") or {})
            for d in docs
            if d.get("kind") == "Namespace"
        }
        kinds = {}
        for doc in docs:
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            name = f"{kind}/{(doc.get('metadata') or {}).get('name')}"
            kinds[kind] = kinds.get(kind, 0) + 1
            group, _, version = api.rpartition("/")
            vendored = args.schemas / group / f"{kind.lower()}_{version}.json" if group else None
            for k8s_version in args.kubernetes_version:
                try:
                    if vendored is not None and vendored.exists():
                        check_custom(doc, vendored, k8s_version)
                    else:
                        kv.validate(doc, k8s_version, strict=True)
                except jsonschema.ValidationError as e:
                    where = ".".join(str(p) for p in e.absolute_path) or "(root)"
                    print(f"ERROR {path}: {name} (Kubernetes {k8s_version}): {where}: {e.message}")
                    errors += 1
                except kv.SchemaNotFoundError as e:
                    print(f"ERROR {path}: {name}: no schema: {e.message}; vendor its CRD under {args.schemas}")
                    errors += 1
                    break
            pod_path = WORKLOADS.get(kind) if api in ("v1", "apps/v1", "batch/v1") else None
            if pod_path:
                ns = (doc.get("metadata") or {}).get("namespace")
                level = (namespaces.get(ns) or {}).get("pod-security.kubernetes.io/enforce")
                if level in ("baseline", "restricted"):
                    for problem in pod_security_errors(dig(doc, pod_path) or {}, level):
                        print(f"ERROR {path}: {name}: Pod Security {level}: {problem}")
                        errors += 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        levels = ", ".join(
            f"{ns}={labels.get('pod-security.kubernetes.io/enforce', 'none')}"
            for ns, labels in sorted(namespaces.items())
        )
        print(f"checked {path}: {len(docs)} objects ({summary}); Pod Security {levels or 'no Namespace'}")
    if errors:
        print(f"{errors} error(s)")
        return 1
    return 0


_custom_cache = {}


def check_custom(doc, schema_path, k8s_version):
    """A custom resource against its vendored schema, its metadata against
    the ObjectMeta of `k8s_version` (strict)."""
    key = (schema_path, k8s_version)
    if key not in _custom_cache:
        schema = json.loads(schema_path.read_text())
        version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(k8s_version)][-1]
        definitions = kv.schema_contents(
            f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", k8s_version
        )
        registry = Resource.from_contents(definitions) @ Registry()
        meta = {"$ref": f"{definitions['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
        _custom_cache[key] = (
            jsonschema.Draft202012Validator(schema),
            jsonschema.Draft202012Validator(meta, registry=registry),
        )
    body, meta = _custom_cache[key]
    body.validate(doc)
    if "metadata" not in doc or not (doc["metadata"] or {}).get("name"):
        raise jsonschema.ValidationError("metadata.name is required")
    try:
        meta.validate(doc["metadata"])
    except jsonschema.ValidationError as e:
        e.path.appendleft("metadata")
        raise


if __name__ == "__main__":
    sys.exit(main())

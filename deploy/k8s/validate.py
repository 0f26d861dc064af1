"""Renders deploy/k8s with `kubectl kustomize` and validates every object it produces.

    python deploy/k8s/validate.py [KUSTOMIZATION_DIR ...]   (default: base, overlays/production)

Run it through scripts/validate-k8s, which installs what it needs. No cluster is used:
- Kubernetes kinds are checked against the JSON schemas of Kubernetes K8S_VERSION that
  the pinned kubernetes-validate package bundles, in its strict variant (an unknown
  field is an error, as with kubectl's strict field validation);
- the operators' custom resources against the trimmed CRD schemas in schemas/, made
  strict the same way (see the header of each file for where it comes from);
- references between objects: selectors that select something, the HPA's target,
  ConfigMaps that are rendered, Secrets that are rendered or documented in
  overlays/production/secrets.env.example, probe ports the container declares.
An object of a kind with no schema is an error too. Exits 1 and lists every error.
"""

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv

K8S_VERSION = "1.34"
HERE = Path(__file__).resolve().parent
DEFAULT_DIRS = ["base", "overlays/production"]
SECRETS_DOC = HERE / "overlays/production/secrets.env.example"
# Custom resources: (apiVersion, kind) -> trimmed CRD schema.
CRD_SCHEMAS = {
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_v1_cluster.yaml",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com_v1beta1_rabbitmqcluster.yaml",
    ("mongodbcommunity.mongodb.com/v1", "MongoDBCommunity"): (
        "mongodbcommunity.mongodb.com_v1_mongodbcommunity.yaml"
    ),
}
# Secrets the manifests read but do not create: the operators write the first three
# (named by the custom resources), an operator of the cluster creates the rest.
EXTERNAL_SECRETS = {
    "marquee-pg-app",
    "marquee-mongo-app",
    "marquee-rabbitmq-default-user",
    "marquee-jwt",
    "marquee-kong",
    "marquee-mongo-password",
    "marquee-bootstrap-admin",
    "marquee-ticket-keys",
}
# kustomize v5 (kubectl 1.27+): `labels` with includeTemplates and regex patch targets.
MIN_KUSTOMIZE_MAJOR = 5
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CR_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
        "namespace": {"type": "string", "pattern": DNS_LABEL},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def strict(schema, base):
    """Inlines `$ref: file.yaml` and closes every object schema that lists its
    properties (unless it preserves unknown fields, as the API server does)."""
    if isinstance(schema, list):
        return [strict(item, base) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return strict(load_yaml(base / schema["$ref"]), base)
    out = {key: strict(value, base) for key, value in schema.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def load_yaml(path):
    with open(path, encoding="utf-8") as file:
        return yaml.safe_load(file)


def crd_validators():
    validators = {}
    for key, name in CRD_SCHEMAS.items():
        schema = strict(load_yaml(HERE / "schemas" / name), HERE / "schemas")
        schema["properties"]["metadata"] = CR_METADATA
        jsonschema.Draft7Validator.check_schema(schema)
        validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def check_kustomize():
    reply = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True)
    version = json.loads(reply.stdout or "{}").get("kustomizeVersion", "") if reply.returncode == 0 else ""
    major = int(version.lstrip("v").split(".")[0]) if version[1:2].isdigit() else 0
    if major < MIN_KUSTOMIZE_MAJOR:
        sys.exit(
            f"kubectl's kustomize is {version or 'unknown'}; deploy/k8s needs v{MIN_KUSTOMIZE_MAJOR} "
            "(kubectl 1.27 or later; Debian bookworm's kubernetes-client 1.20 has v2.0.3)"
        )
    return version


def render(directory):
    """The objects `kubectl kustomize` renders, or an error (warnings count as errors:
    a deprecated field today is a failing render tomorrow)."""
    reply = subprocess.run(["kubectl", "kustomize", str(HERE / directory)], capture_output=True, text=True)
    if reply.returncode != 0 or reply.stderr.strip():
        return None, f"kubectl kustomize {directory}: {reply.stderr.strip() or 'failed'}"
    return [doc for doc in yaml.safe_load_all(reply.stdout) if doc], None


def path_of(error):
    return ".".join(str(part) for part in error.absolute_path) or "(top)"


@functools.cache
def k8s_validator(api_version, kind):
    """The strict schema kubernetes-validate has for this kind in K8S_VERSION, or None.
    Found as kubernetes_validate.validate finds it; built here so that every error of
    an object is reported, not only the first (the package's version is pinned)."""
    version = [v for v in kv.all_versions() if kv.major_minor(v) == K8S_VERSION][-1]
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", K8S_VERSION)
    except FileNotFoundError:
        return None
    definitions = kv.schema_contents(f"{folder}/_definitions.json", K8S_VERSION)
    # Each file names itself ($id), and the kinds' schemas refer to the definitions by it.
    registry = referencing.Registry()
    for contents in (schema, definitions):
        registry = referencing.Resource.from_contents(contents) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(obj, crds):
    key = (obj.get("apiVersion"), obj.get("kind"))
    validator = crds.get(key) or k8s_validator(*key)
    if validator is None:
        return [f"no schema for {key[1]} {key[0]} in Kubernetes {K8S_VERSION} or schemas/"]
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{path_of(e)}: {e.message}" for e in errors]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def reference_errors(objs, documented):
    """References the schemas cannot see: each error names the object it is in."""
    named = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    pods = [o["spec"]["template"] for o in objs if o["kind"] == "Deployment"]
    pod_labels = [p["metadata"].get("labels", {}) for p in pods]
    errors = []
    for o in objs:
        kind, name, spec = o["kind"], o["metadata"]["name"], o.get("spec", {})
        where = f"{kind}/{name}"
        if kind == "Deployment":
            template_labels = spec["template"]["metadata"].get("labels", {})
            if not selects(spec["selector"].get("matchLabels"), template_labels):
                errors.append(f"{where}: selector does not match its pod template")
            errors += pod_errors(where, spec["template"]["spec"], named, documented)
        if kind in ("Service", "PodDisruptionBudget"):
            selector = spec.get("selector", {})
            selector = selector.get("matchLabels", selector) if kind == "PodDisruptionBudget" else selector
            if not any(selects(selector, labels) for labels in pod_labels):
                errors.append(f"{where}: selector {selector} selects no Deployment's pods")
        if kind == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if (target["kind"], target["name"]) not in named:
                errors.append(f"{where}: scaleTargetRef {target['kind']}/{target['name']} is not rendered")
    return errors


def pod_errors(where, pod, named, documented):
    errors = []

    def secret(name):
        if ("Secret", name) not in named and name not in documented:
            errors.append(f"{where}: Secret {name} is neither rendered nor in {SECRETS_DOC.name}")

    def config_map(name):
        if ("ConfigMap", name) not in named:
            errors.append(f"{where}: ConfigMap {name} is not rendered")

    for volume in pod.get("volumes", []):
        if "secret" in volume:
            secret(volume["secret"]["secretName"])
        if "configMap" in volume:
            config_map(volume["configMap"]["name"])
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                config_map(source["configMapRef"]["name"])
            if "secretRef" in source:
                secret(source["secretRef"]["name"])
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                secret(ref["secretKeyRef"]["name"])
            if "configMapKeyRef" in ref:
                config_map(ref["configMapKeyRef"]["name"])
        ports = container.get("ports", [])
        names = {p.get("name") for p in ports} | {p["containerPort"] for p in ports}
        for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            for handler in ("grpc", "httpGet", "tcpSocket"):
                port = container.get(probe_kind, {}).get(handler, {}).get("port")
                if port is not None and port not in names:
                    errors.append(f"{where}: {probe_kind} port {port} is not a port of {container['name']}")
    return errors


def main(dirs):
    version = check_kustomize()
    crds = crd_validators()
    documented = {name for name in EXTERNAL_SECRETS if name in SECRETS_DOC.read_text(encoding="utf-8")}
    failures, checked = [], 0
    for directory in dirs:
        objs, error = render(directory)
        if error:
            failures.append(error)
            continue
        for obj in objs:
            checked += 1
            label = f"{directory}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            failures += [f"{label}: {message}" for message in schema_errors(obj, crds)]
        failures += [f"{directory}: {message}" for message in reference_errors(objs, documented)]
        kinds = sorted({o["kind"] for o in objs})
        print(f"{directory}: {len(objs)} objects ({', '.join(kinds)})")
    for failure in failures:
        print(f"ERROR {failure}")
    print(
        f"validated {checked} objects against Kubernetes {K8S_VERSION} (strict) and "
        f"{len(crds)} trimmed CRD schemas, kustomize {version}: {len(failures)} errors"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or DEFAULT_DIRS))

#!/usr/bin/env python3
"""Checks what schema validators cannot: that the rendered pollbus manifests agree with each other
and with pollbus.toml. Run by scripts/check-deploy.sh (with the repo venv's Python, which has
PyYAML and jsonschema through kubernetes-validate):

    check-rendered.py sqlite RENDERED.yaml
    check-rendered.py postgres RENDERED.yaml

It also validates the ServiceMonitor and the PrometheusRule, Prometheus Operator CRD kinds that
kubernetes-validate has no schema for, against the subset of the CRDs' schemas that pollbus uses
(field names, types and the operator's duration pattern; unknown fields rejected, as --strict
does for core kinds). tests/alerts.rs loads the rules themselves into promtool.
Exit status 1 with one line per problem.
"""

import re
import sys
import tomllib

import jsonschema
import yaml

ADMIN_PORT = 9464
# Egress the base NetworkPolicy allows (DNS, HTTPS incl. AMQP over WebSockets, AMQPS); the
# postgres overlay adds PostgreSQL.
BASE_EGRESS = {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5671)}
POSTGRES_EGRESS = BASE_EGRESS | {("TCP", 5432)}

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
SERVICEMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    },
}

METADATA_SCHEMA = SERVICEMONITOR_SCHEMA["properties"]["metadata"]
PROMETHEUSRULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA_SCHEMA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary", "description", "runbook_url"],
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def seconds(text):
    """A humantime duration as pollbus.toml writes it ("20s", "1m", "500ms") in seconds."""
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"unsupported duration {text!r}")
    for number, unit in parts:
        total += int(number) * units[unit]
    return total


def main(overlay, path):
    problems = []

    def check(ok, message):
        if not ok:
            problems.append(message)

    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def one(kind, name=None):
        found = [d for d in by_kind.get(kind, []) if name is None or d["metadata"]["name"] == name]
        if len(found) != 1:
            problems.append(f"expected one {kind}{' ' + name if name else ''}, found {len(found)}")
            return None
        return found[0]

    check("Secret" not in by_kind, "a Secret is rendered: credentials must come from a Secret the operator creates")
    for d in docs:
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace") == "pollbus", f"{d['kind']}/{d['metadata']['name']} is not in namespace pollbus")

    dep = one("Deployment", "pollbus")
    cm = one("ConfigMap")
    svc = one("Service", "pollbus")
    sm = one("ServiceMonitor", "pollbus")
    rule = one("PrometheusRule", "pollbus")
    pdb = one("PodDisruptionBudget", "pollbus")
    sa = one("ServiceAccount", "pollbus")
    if None in (dep, cm, svc, sm, pdb, sa, rule):
        return problems

    # The config file and what the Deployment gives it.
    config = tomllib.loads(cm["data"]["pollbus.toml"])
    listen = config.get("admin", {}).get("listen", f"0.0.0.0:{ADMIN_PORT}")
    check(listen.rsplit(":", 1)[1] == str(ADMIN_PORT), f"admin.listen {listen} is not port {ADMIN_PORT}")
    grace = seconds(config.get("shutdown_grace", "20s"))
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(tgps > grace, f"terminationGracePeriodSeconds {tgps} must exceed shutdown_grace {grace:g}s")
    check(config.get("sink", {}).get("kind") == "servicebus", "sink.kind is not servicebus")

    containers = pod["containers"]
    check(len(containers) == 1, "expected one container")
    c = containers[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports.get("admin") == ADMIN_PORT, f"container port 'admin' is not {ADMIN_PORT}")
    for probe, path_ in (("livenessProbe", "/live"), ("readinessProbe", "/ready"), ("startupProbe", "/live")):
        http = c.get(probe, {}).get("httpGet", {})
        check(http.get("path") == path_ and http.get("port") in ("admin", ADMIN_PORT), f"{probe} is not GET {path_} on the admin port")
    check(c.get("args") == ["run", "--config", "/etc/pollbus/pollbus.toml"], "container args are not `run --config /etc/pollbus/pollbus.toml`")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check(volumes.get(mounts.get("/etc/pollbus"), {}).get("configMap", {}).get("name") == cm["metadata"]["name"],
          "/etc/pollbus is not the generated pollbus ConfigMap")
    res = c.get("resources", {})
    for kind_ in ("requests", "limits"):
        for r in ("cpu", "memory"):
            check(r in res.get(kind_, {}), f"resources.{kind_}.{r} missing")

    # Every ${env:NAME} in pollbus.toml must be set by the container.
    env = {e["name"]: e for e in c.get("env", [])}
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    referenced = {n for s in strings(config) for n in re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", s)}
    check(referenced, "pollbus.toml reads no ${env:…} secret references")
    for name in sorted(referenced):
        check(name in env, f"pollbus.toml reads ${{env:{name}}} but the container does not set {name}")
    for name, e in env.items():
        if name != "POLLBUS_STATE_URL" or overlay == "postgres":
            check("valueFrom" in e and "secretKeyRef" in e["valueFrom"], f"env {name} is not a Secret reference")

    # Security.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot not set")
    check(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, "runAsUser missing or root")
    check(isinstance(psc.get("runAsGroup"), int) and psc["runAsGroup"] > 0, "runAsGroup missing or root")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem not set")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation not false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities do not drop ALL")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile is not RuntimeDefault")

    # Workload identity.
    check("azure.workload.identity/client-id" in sa["metadata"].get("annotations", {}), "ServiceAccount lacks azure.workload.identity/client-id")
    check(spec["template"]["metadata"]["labels"].get("azure.workload.identity/use") == "true", "pod lacks label azure.workload.identity/use=true")
    check(pod.get("serviceAccountName") == sa["metadata"]["name"], "pod does not use the pollbus ServiceAccount")

    # Service, ServiceMonitor and the pods they select.
    pod_labels = spec["template"]["metadata"]["labels"]
    selects = lambda sel: all(pod_labels.get(k) == v for k, v in sel.items())
    check(selects(spec["selector"]["matchLabels"]), "Deployment selector does not match its pods")
    check(selects(svc["spec"]["selector"]), "Service selector does not match the pods")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    try:
        jsonschema.validate(sm, SERVICEMONITOR_SCHEMA)
    except jsonschema.ValidationError as e:
        problems.append(f"ServiceMonitor invalid at {'/'.join(map(str, e.absolute_path))}: {e.message}")
    try:
        jsonschema.validate(rule, PROMETHEUSRULE_SCHEMA)
    except jsonschema.ValidationError as e:
        problems.append(f"PrometheusRule invalid at {'/'.join(map(str, e.absolute_path))}: {e.message}")
    check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"].get("matchLabels", {}).items()),
          "ServiceMonitor selector does not match the Service labels")
    for ep in sm["spec"]["endpoints"]:
        p = svc_ports.get(ep.get("port"))
        check(p is not None and p.get("targetPort") in ("admin", ADMIN_PORT), f"ServiceMonitor port {ep.get('port')} is not the Service's admin port")
        check(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor path is not /metrics")

    # NetworkPolicies: ingress only to the admin port, egress only to the allowed ports.
    policies = [p for p in by_kind.get("NetworkPolicy", []) if selects(p["spec"]["podSelector"].get("matchLabels", {}))]
    check(any(set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} for p in policies), "no NetworkPolicy isolates both directions")
    ingress, egress = set(), set()
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            check(rule.get("ports"), f"NetworkPolicy {p['metadata']['name']}: an ingress rule allows every port")
            ingress |= {(x.get("protocol", "TCP"), x["port"]) for x in rule.get("ports", [])}
        for rule in p["spec"].get("egress", []):
            check(rule.get("ports"), f"NetworkPolicy {p['metadata']['name']}: an egress rule allows every port")
            egress |= {(x.get("protocol", "TCP"), x["port"]) for x in rule.get("ports", [])}
    check(ingress == {("TCP", ADMIN_PORT)}, f"ingress allows {sorted(ingress)}, want only TCP {ADMIN_PORT}")
    want = POSTGRES_EGRESS if overlay == "postgres" else BASE_EGRESS
    check(egress == want, f"egress allows {sorted(egress)}, want {sorted(want)}")

    # The overlay's shape.
    replicas = spec.get("replicas", 1)
    state_env = env.get("POLLBUS_STATE_URL", {})
    if overlay == "sqlite":
        check(replicas == 1, f"sqlite overlay must run exactly 1 replica, has {replicas}")
        check(spec.get("strategy", {}).get("type") == "Recreate", "sqlite overlay must use the Recreate strategy")
        check(str(state_env.get("value", "")).startswith("sqlite:///var/lib/pollbus/"), "POLLBUS_STATE_URL is not a SQLite file under /var/lib/pollbus")
        claim = volumes.get(mounts.get("/var/lib/pollbus"), {}).get("persistentVolumeClaim", {}).get("claimName")
        check(claim is not None and any(p["metadata"]["name"] == claim for p in by_kind.get("PersistentVolumeClaim", [])),
              "/var/lib/pollbus is not the overlay's PersistentVolumeClaim")
    else:
        check(replicas >= 2, f"postgres overlay should run several replicas, has {replicas}")
        check(spec.get("strategy", {}).get("type") == "RollingUpdate", "postgres overlay must use RollingUpdate")
        check("secretKeyRef" in state_env.get("valueFrom", {}), "POLLBUS_STATE_URL is not read from the Secret")
        check("PersistentVolumeClaim" not in by_kind, "postgres overlay needs no PersistentVolumeClaim")
        check(pod.get("topologySpreadConstraints") or pod.get("affinity", {}).get("podAntiAffinity"), "replicas are not spread")
    pdb_spec = pdb["spec"]
    check(selects(pdb_spec["selector"]["matchLabels"]), "PodDisruptionBudget does not select the pods")
    check(("minAvailable" in pdb_spec) != ("maxUnavailable" in pdb_spec), "PodDisruptionBudget needs exactly one of minAvailable/maxUnavailable")
    if "minAvailable" in pdb_spec:
        check(0 < pdb_spec["minAvailable"] < replicas, f"PDB minAvailable {pdb_spec['minAvailable']} blocks every eviction of {replicas} replicas")
    return problems


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("sqlite", "postgres"):
        sys.exit("usage: check-rendered.py sqlite|postgres RENDERED.yaml")
    found = main(sys.argv[1], sys.argv[2])
    for p in found:
        print(f"  FAIL {sys.argv[1]}: {p}")
    if found:
        sys.exit(1)
    print(f"  ok {sys.argv[1]}: manifests agree with each other and with pollbus.toml; ServiceMonitor and PrometheusRule match their schema subsets")

#!/usr/bin/env python3
"""Offline checks of the deploy/ manifests, one subcommand per check (deploy/check.sh runs them
with the tools it installed; PyYAML and kubernetes-validate come from its virtualenv).

  validate.py builtin VERSIONS FILE...   strict kubernetes-validate of every built-in kind, for
                                         each Kubernetes version (comma list, e.g. 1.31.0,1.37.0);
                                         CRD kinds are skipped here and listed with `crds`
  validate.py crds OUT FILE...           write the CRD objects (cert-manager, Prometheus Operator)
                                         as JSON for validate-crds.mjs; fails on unknown kinds
  validate.py base64 FILE...             caBundle fields, Secret data and ConfigMap binaryData
                                         decode as base64 (as the API server does: \\r and \\n
                                         ignored, nothing else); caBundle holds PEM certificates
  validate.py pod-security FILE...       Pod Security "restricted" on every pod template
                                         (pod_security.py has the rules)
  validate.py pod-policy FILE...         our own rules on top: read-only root filesystem,
                                         requests and limits, image ca-server:<tag> from `images:`
  validate.py rules RULES PROMRULE       the PrometheusRule's spec.groups equal the rules file's
  validate.py config TOML                the ConfigMap's TOML parses and uses only known keys
  validate.py pem FILE...                ConfigMap values named *.crt / *.pem hold certificates
  validate.py shape single|ha FILE       the overlay has the workload the docs promise (kind,
                                         replicas, volumes, Secrets, probes, ports, PDB)

Every subcommand prints problems to stderr and exits 1 if there are any.
"""
import base64
import binascii
import json
import ssl
import sys
import tomllib

import yaml

import pod_security

CRD_GROUPS = {
    "cert-manager.io": "cert-manager",
    "acme.cert-manager.io": "cert-manager",
    "monitoring.coreos.com": "prometheus-operator",
}


def load(files):
    """Every object in the files, with where it came from."""
    objects = []
    for name in files:
        with open(name, encoding="utf-8") as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is None:
                    continue
                if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                    raise SystemExit(f"{name}: document {i} is not a Kubernetes object")
                objects.append((f"{name}#{i} {doc['kind']}/{doc.get('metadata', {}).get('name')}", doc))
    return objects


def group_of(obj):
    api = obj["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def finish(problems):
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


def cmd_builtin(versions, files):
    import kubernetes_validate as kv
    problems, checked = [], 0
    for where, obj in load(files):
        if group_of(obj) in CRD_GROUPS:
            continue
        for version in versions.split(","):
            try:
                kv.validate(obj, version, strict=True)
                checked += 1
            except kv.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                problems.append(f"{where}: k8s {version}: {path}: {e.message}")
            except kv.SchemaNotFoundError:
                problems.append(f"{where}: k8s {version}: no schema for {obj['apiVersion']} {obj['kind']}")
    print(f"{checked} object validations", file=sys.stderr)
    return finish(problems)


def cmd_crds(out, files):
    crds, problems = [], []
    for where, obj in load(files):
        group = group_of(obj)
        if group in CRD_GROUPS:
            crds.append({"where": where, "package": CRD_GROUPS[group], "object": obj})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(crds, f)
    return finish(problems)


def decode_like_the_api_server(value):
    """Go's base64.StdEncoding as encoding/json and the OpenAPI `byte` format use it: \\r and
    \\n are skipped, anything else outside the alphabet or bad padding is an error."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    compact = value.replace("\r", "").replace("\n", "")
    if not compact:
        raise ValueError("empty")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as e:
        raise ValueError(str(e)) from None


def pem_certificates(data, where, problems):
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "-----BEGIN CERTIFICATE-----" not in text:
        problems.append(f"{where}: holds no PEM certificate")
        return
    try:
        ssl.create_default_context(cadata=text).get_ca_certs()
    except ssl.SSLError as e:
        problems.append(f"{where}: PEM certificates do not parse: {e}")


def walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield path + (k,), k, v
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def cmd_base64(files):
    problems, checked = [], 0
    for where, obj in load(files):
        fields = []
        for path, key, value in walk(obj):
            if key == "caBundle":
                fields.append((path, value, True))
        if obj["kind"] == "Secret" and group_of(obj) == "":
            fields += [(("data", k), v, False) for k, v in (obj.get("data") or {}).items()]
        if obj["kind"] == "ConfigMap" and group_of(obj) == "":
            fields += [(("binaryData", k), v, False) for k, v in (obj.get("binaryData") or {}).items()]
        for path, value, is_bundle in fields:
            name = f"{where}: {'.'.join(map(str, path))}"
            checked += 1
            try:
                data = decode_like_the_api_server(value)
            except ValueError as e:
                problems.append(f"{name}: not valid base64 ({e})")
                continue
            if is_bundle or path[-1] in ("ca.crt", "tls.crt"):
                pem_certificates(data, name, problems)
    print(f"{checked} base64 fields", file=sys.stderr)
    return finish(problems)


def cmd_pod_security(files):
    problems, pods = [], 0
    for where, obj in load(files):
        template = pod_security.pod_template(obj)
        if template is None:
            continue
        pods += 1
        metadata, spec = template
        problems += [f"{where}: {v}" for v in pod_security.violations(spec, metadata)]
    if pods == 0:
        problems.append("no pod templates found")
    print(f"{pods} pod templates", file=sys.stderr)
    return finish(problems)


def cmd_pod_policy(files):
    problems = []
    for where, obj in load(files):
        template = pod_security.pod_template(obj)
        if template is None:
            continue
        _, spec = template
        for field in ("initContainers", "containers"):
            for c in spec.get(field) or []:
                n = f"{where}: {field}[{c.get('name')}]"
                sc = c.get("securityContext") or {}
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{n}: readOnlyRootFilesystem must be true")
                res = c.get("resources") or {}
                for kind in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in (res.get(kind) or {}):
                            problems.append(f"{n}: resources.{kind}.{r} is missing")
                image = c.get("image", "")
                if image.split(":")[0].split("/")[-1] == "ca-server" and ":" not in image.split("/")[-1]:
                    problems.append(f"{n}: image {image!r} has no tag (kustomize images: entry missing?)")
    return finish(problems)


def cmd_rules(rules_file, promrule_file):
    with open(rules_file, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    with open(promrule_file, encoding="utf-8") as f:
        wrapped = yaml.safe_load(f)
    problems = []
    if wrapped.get("apiVersion") != "monitoring.coreos.com/v1" or wrapped.get("kind") != "PrometheusRule":
        problems.append(f"{promrule_file}: not a monitoring.coreos.com/v1 PrometheusRule")
    if set(rules) != {"groups"}:
        problems.append(f"{rules_file}: expected only `groups:` at the top, found {sorted(rules)}")
    if (wrapped.get("spec") or {}) != {"groups": rules.get("groups")}:
        problems.append(f"{promrule_file}: spec differs from {rules_file}'s groups")
    if not rules.get("groups"):
        problems.append(f"{rules_file}: no rule groups")
    return finish(problems)


# The configuration keys ca-server accepts today (docs/configuration.md, ca-server/src/config.rs
# and the [acme], [vault], [metrics] sections). `*` stands for any name (profiles, mounts).
CONFIG_KEYS = {
    "data_dir", "database_url", "listen", "http_listen", "shutdown_grace",
    "log.format", "log.level",
    "tls.names", "tls.cert_file", "tls.key_file", "tls.lifetime",
    "ca.backdate", "ca.crl_urls", "ca.issuing_certificate_urls", "ca.crl_shards",
    "ca.crl_refresh", "ca.lifetimes.*.default", "ca.lifetimes.*.max",
    "ca.limits.max_sans", "ca.limits.max_san_bytes", "ca.auto_rotate", "ca.root_key_file",
    "limits.max_connections", "limits.max_in_flight", "limits.header_read_timeout",
    "limits.max_concurrent_streams",
    "trust.configmap_namespace", "trust.cluster_trust_bundle", "trust.cluster_trust_bundle_version",
    "trust.kubernetes_api", "trust.kubernetes_ca_file", "trust.kubernetes_token_file",
    "acme.enabled", "acme.external_url", "acme.terms_of_service", "acme.website",
    "acme.require_eab", "acme.profiles", "acme.default_profile", "acme.order_lifetime",
    "acme.challenge_wait", "acme.policy.allowed_domains", "acme.policy.allowed_ip_ranges",
    "acme.policy.allow_wildcards", "acme.validation.http01_port",
    "acme.validation.tls_alpn01_port", "acme.validation.dns_resolvers", "acme.validation.timeout",
    "vault.enabled", "vault.pki_mounts", "vault.auth_mounts.*", "vault.trust_domain",
    "vault.version",
    "metrics.tracked_min_lifetime", "metrics.tracked_expired_grace", "metrics.tracked_limit",
    "retention.drop_der_after", "retention.interval",
}


def key_allowed(dotted):
    parts = dotted.split(".")
    for pattern in CONFIG_KEYS:
        pp = pattern.split(".")
        if len(pp) == len(parts) and all(a == "*" or a == b for a, b in zip(pp, parts)):
            return True
    return False


def cmd_config(toml_file):
    with open(toml_file, "rb") as f:
        try:
            config = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            return finish([f"{toml_file}: {e}"])
    problems = []

    def visit(table, prefix):
        for k, v in table.items():
            dotted = f"{prefix}{k}"
            if isinstance(v, dict):
                visit(v, dotted + ".")
            elif not key_allowed(dotted):
                problems.append(f"{toml_file}: unknown key {dotted} (the server refuses unknown keys)")
    visit(config, "")
    if config.get("data_dir") != "/var/lib/ca-server":
        problems.append(f"{toml_file}: data_dir must be /var/lib/ca-server (the manifests mount it there)")
    if not config.get("http_listen", "").endswith(":8080"):
        problems.append(f"{toml_file}: http_listen must be on port 8080 (probes, Service port http)")
    return finish(problems)


def cmd_pem(files):
    problems = []
    for where, obj in load(files):
        if obj["kind"] != "ConfigMap":
            continue
        for k, v in (obj.get("data") or {}).items():
            if k.endswith((".crt", ".pem")):
                pem_certificates(v, f"{where}: data.{k}", problems)
    return finish(problems)


def find(objects, kind, name=None):
    found = [o for _, o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


def cmd_shape(overlay, render):
    objects = load([render])
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(f"{overlay}: {what}")

    need(find(objects, "Namespace", "ca-system"), "Namespace ca-system")
    svc = find(objects, "Service", "ca-server")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in (svc or {}).get("spec", {}).get("ports", [])}
    need(ports == {"https": (443, "https"), "http": (80, "http")}, f"Service ca-server ports https 443, http 80 (got {ports})")
    for kind in ("ServiceAccount", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"):
        need(find(objects, kind, "ca-server"), f"{kind} ca-server")
    need(any(o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ca-server-config")
             for _, o in objects), "ConfigMap ca-server-config-<hash>")
    crb = find(objects, "ClusterRoleBinding", "ca-server-tokenreview")
    need(crb and crb["roleRef"]["name"] == "system:auth-delegator", "ClusterRoleBinding to system:auth-delegator")
    workload_kind = {"single": "StatefulSet", "ha": "Deployment"}[overlay]
    w = find(objects, workload_kind, "ca-server")
    need(w, f"{workload_kind} ca-server")
    if not w:
        return finish(problems)
    spec = w["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    need(c.get("args") == ["serve"], "container args [serve]")
    need(env.get("CA_SERVER_CONFIG", {}).get("value") == "/etc/ca-server/config.toml"
         and mounts.get("/etc/ca-server") in volumes, "config file mounted at /etc/ca-server/config.toml")
    need({p["containerPort"] for p in c["ports"]} == {8443, 8080}, "container ports 8443 and 8080")
    need(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, "readiness /readyz on http")
    need(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, "liveness /healthz on http")
    need(c["image"] == "ca-server:0.1.0", f"image ca-server:0.1.0 (got {c['image']})")
    psc = pod["securityContext"]
    need(psc.get("runAsUser") == 65532 and psc.get("fsGroup") == 65532, "runAsUser and fsGroup 65532")
    if overlay == "single":
        need(spec["replicas"] == 1, "exactly 1 replica (SQLite)")
        need(spec["serviceName"] == "ca-server-headless"
             and find(objects, "Service", "ca-server-headless")
             and find(objects, "Service", "ca-server-headless")["spec"].get("clusterIP") == "None",
             "headless governing Service")
        need([t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])] == ["data"]
             and mounts.get("/var/lib/ca-server") == "data", "data dir on the volumeClaimTemplate `data`")
        need("CA_SERVER_DATABASE_URL" not in env, "no database URL (SQLite in the data dir)")
    else:
        need(spec["replicas"] == 3, "3 replicas")
        ref = env.get("CA_SERVER_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        need(ref == {"name": "ca-server-database", "key": "url"}, "database URL from Secret ca-server-database key url")
        ca_vol = volumes.get(mounts.get("/var/lib/ca-server/ca"), {}).get("secret", {})
        need(ca_vol.get("secretName") == "ca-server-ca" and ca_vol.get("defaultMode") == 0o400,
             "Secret ca-server-ca at /var/lib/ca-server/ca, mode 0400")
        need(sorted(i["key"] for i in ca_vol.get("items", [])) == ["chain.pem", "issuing.crt", "issuing.key", "seal.key"],
             "the four CA files (and not root.key) from the Secret")
        need("emptyDir" in volumes.get(mounts.get("/var/lib/ca-server"), {}), "data dir on an emptyDir")
        pdb = find(objects, "PodDisruptionBudget", "ca-server")
        need(pdb and pdb["spec"].get("minAvailable") == 2, "PodDisruptionBudget minAvailable 2")
        need(len(pod.get("topologySpreadConstraints", [])) >= 1, "topologySpreadConstraints")
    return finish(problems)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    commands = {
        "builtin": lambda: cmd_builtin(args[0], args[1:]),
        "crds": lambda: cmd_crds(args[0], args[1:]),
        "base64": lambda: cmd_base64(args),
        "pod-security": lambda: cmd_pod_security(args),
        "pod-policy": lambda: cmd_pod_policy(args),
        "rules": lambda: cmd_rules(args[0], args[1]),
        "config": lambda: cmd_config(args[0]),
        "pem": lambda: cmd_pem(args),
        "shape": lambda: cmd_shape(args[0], args[1]),
    }
    if cmd not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[cmd]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

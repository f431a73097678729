"""Checks of the Helm chart that need no cluster, with Helm's own Go SDK
(helm-python-sdk: lint, render, values.schema.json) and the Kubernetes
OpenAPI schemas (kubernetes-validate).

    python helm/check_chart.py helm/switchboard [--dump-config DIR]

For each value set below, given as `--set` strings exactly as a user would
type them: render, validate every manifest against the schemas of the
oldest Kubernetes the chart supports and of the newest known, and assert
what the chart promises (replicas follow --set, the headless seed service,
PDBs, the drain wiring, probes, Prometheus annotations, the Secret).
Then check that values.schema.json refuses bad values. Exits 1 on the
first failure, naming it. tests/helm_chart.rs runs this under cargo test.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

RELEASE, NAMESPACE = "sb", "chat"
FULLNAME = f"{RELEASE}-switchboard"
# Chart.yaml's kubeVersion floor, and the newest schemas kubernetes-validate has.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
# Kinds Kubernetes itself does not define; checked by the assertions only.
CRD_KINDS = {"ServiceMonitor", "Certificate"}

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "scaled, no HPA": [
        "gateway.replicas=5,broker.replicas=5,gateway.autoscaling.enabled=false"
    ],
    "HPA floor from replicas": ["gateway.replicas=4,gateway.autoscaling.maxReplicas=12"],
    "HPA with its own floor": [
        "gateway.autoscaling.minReplicas=3,gateway.autoscaling.maxReplicas=6,broker.replicas=7"
    ],
    "ServiceMonitor": ["metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=kps"],
    "existing Secret": ["existingSecret=switchboard-prod"],
    "given secrets": [
        "auth.hmacSecret=s3cret,auth.apiKeys={k1,k2}",
        "auth.rsaPublicKey=-----BEGIN PUBLIC KEY-----",
        "auth.audience=chat-prod,auth.issuer=https://idp.example.com",
    ],
    "long drain, LoadBalancer, no PDBs or annotations": [
        "drain.timeoutSeconds=120,drain.preStopSeconds=15",
        "gateway.service.type=LoadBalancer,gateway.service.port=443,gateway.service.allowPlaintext=true",
        "gateway.pdb.enabled=false,broker.pdb.enabled=false,metrics.podAnnotations=false",
    ],
    "native TLS on a LoadBalancer, scraped over HTTPS": [
        "gateway.tls.enabled=true,gateway.tls.secretName=edge-tls",
        "gateway.service.type=LoadBalancer,gateway.service.port=443",
        "metrics.serviceMonitor.enabled=true",
    ],
    "Ingress with TLS": [
        "ingress.enabled=true,ingress.host=chat.example.com,ingress.tls.secretName=chat-tls",
        "ingress.className=nginx",
    ],
    "Ingress with TLS to gateways with TLS": [
        "ingress.enabled=true,ingress.host=chat.example.com,ingress.tls.secretName=chat-tls",
        "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/backend-protocol=HTTPS",
        "gateway.tls.enabled=true,gateway.tls.secretName=edge-tls",
    ],
    "a plaintext Ingress": ["ingress.enabled=true,ingress.host=chat.example.com,ingress.tls.enabled=false"],
    "metrics scraped from a monitoring namespace": [
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        "networkPolicy.clientsFrom[0].ipBlock.cidr=10.0.0.0/8",
    ],
    "certificates from cert-manager": [
        "clusterSecurity.certificates=certManager,clusterSecurity.certManager.issuerRef.name=cluster-ca",
        "clusterSecurity.certManager.issuerRef.kind=ClusterIssuer,broker.replicas=4",
    ],
    "certificates and gossip key from existing Secrets": [
        "clusterSecurity.certificates=existingSecret,clusterSecurity.existingBrokerSecret=b-tls",
        "clusterSecurity.existingGatewaySecret=g-tls,clusterSecurity.existingGossipSecret=gk",
    ],
    "insecure, no NetworkPolicy": ["clusterSecurity.enabled=false,networkPolicy.enabled=false"],
    "memory limits set per role": [
        "broker.resources.limits.memory=2Gi,gateway.resources.limits.memory=512M",
    ],
    "unreplicated, no persistence": ["broker.replicationFactor=1,broker.persistence.enabled=false"],
    "three copies on a given StorageClass": [
        "broker.replicationFactor=3,broker.persistence.size=1Gi,broker.persistence.storageClassName=fast",
    ],
    "no memory limit": ["broker.resources.limits=null,gateway.resources.limits=null"],
    "image and placement": [
        "image.repository=registry.example.com/switchboard,image.tag=1.2.3",
        "image.pullPolicy=Always,imagePullSecrets[0].name=regcred",
        "broker.nodeSelector.disktype=ssd,gateway.podAnnotations.team=chat",
    ],
}

# Values the schema must refuse: the --set, and where the refusal must point.
BAD_VALUES: dict[str, tuple[str, str]] = {
    "zero gateways": ("gateway.replicas=0", "/gateway/replicas"),
    "brokers as a word": ("broker.replicas=three", "/broker/replicas"),
    "a misspelt section": ("gatway.replicas=3", "'gatway' not allowed"),
    "an unknown key in a section": ("broker.replica=3", "'replica' not allowed"),
    "a negative drain": ("drain.timeoutSeconds=-1", "/drain/timeoutSeconds"),
    "a service type that does not exist": ("gateway.service.type=Ingress", "/gateway/service/type"),
    "a pull policy that does not exist": ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    "an HPA bound of zero": ("gateway.autoscaling.maxReplicas=0", "/gateway/autoscaling/maxReplicas"),
    "an API key with a space": ("auth.apiKeys={bad key}", "/auth/apiKeys/0"),
    "an empty token audience": ("auth.audience=", "/auth/audience"),
    "a plaintext LoadBalancer": ("gateway.service.type=LoadBalancer", "/gateway/tls/enabled"),
    "a plaintext NodePort": ("gateway.service.type=NodePort", "/gateway/tls/enabled"),
    "native TLS without its Secret": ("gateway.tls.enabled=true", "/gateway/tls/secretName"),
    "an Ingress without a host": ("ingress.enabled=true,ingress.tls.secretName=x", "/ingress/host"),
    "an Ingress with TLS but no Secret": (
        "ingress.enabled=true,ingress.host=chat.example.com",
        "/ingress/tls/secretName",
    ),
    "a certificate source that does not exist": (
        "clusterSecurity.certificates=manual",
        "/clusterSecurity/certificates",
    ),
    "existing certificates without their Secrets": (
        "clusterSecurity.certificates=existingSecret",
        "/clusterSecurity/existingBrokerSecret",
    ),
    "cert-manager without an issuer": (
        "clusterSecurity.certificates=certManager",
        "/clusterSecurity/certManager/issuerRef/name",
    ),
    "four copies of each channel": ("broker.replicationFactor=4", "/broker/replicationFactor"),
    "replicated without persistence": (
        "broker.persistence.enabled=false",
        "/broker/replicationFactor",
    ),
    "a PDB bound that is neither a count nor a percentage": (
        "broker.pdb.maxUnavailable=half",
        "/broker/pdb/maxUnavailable",
    ),
}


class Failed(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def merge(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def values_of(sets: list[str]) -> dict[str, Any]:
    """What `--set A --set B` gives, parsed by Helm's own strvals."""
    out: dict[str, Any] = {}
    for s in sets:
        merge(out, helm.parse_set_string(s))
    return out


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__file"] = path
                docs.append(doc)
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    check(len(found) == 1, f"one {kind} {name}, found {len(found)}")
    return found[0]


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def validate(docs: list[dict[str, Any]]) -> int:
    n = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        clean = {k: v for k, v in doc.items() if k != "__file"}
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(clean, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise Failed(
                    f"{doc['kind']} {doc['metadata']['name']} ({doc['__file']}) is invalid "
                    f"for Kubernetes {version} at {path}: {e.message}"
                ) from e
            n += 1
    return n


def memory_bytes(quantity: Any) -> int | None:
    """A Kubernetes memory quantity in bytes (the units the chart accepts)."""
    if quantity is None:
        return None
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3,
             "M": 10**6, "G": 10**9, "T": 10**12}
    text = str(quantity)
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def port_number(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    for p in container["ports"]:
        if p["name"] == port:
            return p["containerPort"]
    raise Failed(f"container {container['name']} has no port named {port}")


def check_workload(w: dict[str, Any], values: dict[str, Any], http_port: int, secret: str) -> None:
    name = f"{w['kind']} {w['metadata']['name']}"
    pod = w["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    env = env_of(container)
    drain = values["drain"]

    # Probes: ready on /readyz, alive on /healthz, on the role's HTTP port.
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        get = container[probe]["httpGet"]
        check(get["path"] == path, f"{name}: {probe} GETs {get['path']}, not {path}")
        check(
            port_number(container, get["port"]) == http_port,
            f"{name}: {probe} is not on port {http_port}",
        )

    # The drain: preStop sleep, then SIGTERM and the process' drain timeout,
    # all inside the grace period.
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = spec["terminationGracePeriodSeconds"]
    check(sleep == drain["preStopSeconds"], f"{name}: preStop sleeps {sleep}s")
    check(
        env["SWITCHBOARD_DRAIN_TIMEOUT"] == f"{drain['timeoutSeconds']}s",
        f"{name}: SWITCHBOARD_DRAIN_TIMEOUT is {env['SWITCHBOARD_DRAIN_TIMEOUT']}",
    )
    check(
        grace > sleep + drain["timeoutSeconds"],
        f"{name}: terminationGracePeriodSeconds {grace} does not cover preStop {sleep}s "
        f"+ drain {drain['timeoutSeconds']}s",
    )

    # Limits follow the memory limit: half of it as a broker's budget, one
    # connection per 64 KiB of it at a gateway (docs/operations.md).
    role = "broker" if w["kind"] == "StatefulSet" else "gateway"
    limits = (values[role].get("resources") or {}).get("limits") or {}
    limit = memory_bytes(limits.get("memory"))
    var, want = (
        ("SWITCHBOARD_MEMORY_BUDGET_BYTES", limit and limit // 2)
        if role == "broker"
        else ("SWITCHBOARD_MAX_CONNECTIONS", limit and max(1, limit // 65536))
    )
    got = env.get(var)
    check(
        (got is None and want is None) or got == str(want),
        f"{name}: {var} is {got!r}, want {want!r} for memory limit {limit}",
    )

    # Gossip: bind and announce the pod IP; seed with the brokers' headless service.
    check(env["SWITCHBOARD_GOSSIP"] == "$(POD_IP):7946", f"{name}: gossip address")
    check(
        env["SWITCHBOARD_SEEDS"] == f"{FULLNAME}-broker.{NAMESPACE}.svc:7946",
        f"{name}: seeds are {env['SWITCHBOARD_SEEDS']}",
    )
    names = [e["name"] for e in container["env"]]
    check(names.index("POD_IP") < names.index("SWITCHBOARD_GOSSIP"), f"{name}: POD_IP comes first")

    # Config and secrets from the Secret.
    (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
    check(volume["secret"]["secretName"] == secret, f"{name}: mounts {volume['secret']}")
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    check(
        env["SWITCHBOARD_CONFIG"] == mount["mountPath"] + "/switchboard.toml",
        f"{name}: config path",
    )
    # Client-facing secrets reach the gateways only: a broker needs no API
    # key or token secret, and mounts nothing of the Secret but the config.
    gateway = w["kind"] == "Deployment"
    for var, key in [("SWITCHBOARD_HMAC_SECRET", "hmac-secret"), ("SWITCHBOARD_API_KEYS", "api-keys")]:
        if gateway:
            ref = env[var]["secretKeyRef"]
            check(ref["name"] == secret and ref["key"] == key, f"{name}: {var} from {ref}")
        else:
            check(var not in env, f"{name}: a broker gets {var}")
    if not gateway:
        items = [i["key"] for i in volume["secret"].get("items", [])]
        check(items == ["switchboard.toml"], f"{name}: brokers mount {items or 'the whole Secret'}")
    else:
        # Tokens must name this deployment as their audience and the issuer.
        for var, key in [("SWITCHBOARD_AUTH_AUDIENCE", "audience"), ("SWITCHBOARD_AUTH_ISSUER", "issuer")]:
            check(env[var] == values["auth"][key] != "", f"{name}: {var} is {env[var]!r}")
    check_cluster_security(w, values, container, env)

    # Resources (the HPA scales on CPU requests) and no root.
    check("cpu" in container["resources"]["requests"], f"{name}: no CPU request")
    check(spec["securityContext"]["runAsNonRoot"] is True, f"{name}: may run as root")
    check(container["securityContext"]["readOnlyRootFilesystem"] is True, f"{name}: writable root")

    annotations = pod["metadata"].get("annotations") or {}
    if values["metrics"]["podAnnotations"]:
        check(annotations.get("prometheus.io/scrape") == "true", f"{name}: not scraped")
        check(
            annotations.get("prometheus.io/port") == str(http_port),
            f"{name}: scraped on {annotations.get('prometheus.io/port')}",
        )
    else:
        check("prometheus.io/scrape" not in annotations, f"{name}: scrape annotations left on")
    for k, v in (values["gateway" if w["kind"] == "Deployment" else "broker"]["podAnnotations"]).items():
        check(annotations.get(k) == v, f"{name}: pod annotation {k} missing")




def check_replication(br: dict[str, Any], values: dict[str, Any]) -> None:
    """Brokers store each channel replicationFactor times, and keep their
    replication votes on a claim of their own that outlives the pod."""
    broker = values["broker"]
    (container,) = br["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    factor = env.get("SWITCHBOARD_REPLICATION_FACTOR")
    check(factor == str(broker["replicationFactor"]), f"brokers: replication factor {factor!r}")
    claims = br["spec"].get("volumeClaimTemplates") or []
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    if broker["persistence"]["enabled"]:
        (claim,) = claims
        check(claim["metadata"]["name"] == "data", "brokers: the claim is not named data")
        size = claim["spec"]["resources"]["requests"]["storage"]
        check(size == broker["persistence"]["size"], f"brokers: claim of {size}")
        check(
            env.get("SWITCHBOARD_DATA_DIR") == mounts.get("data") == "/var/lib/switchboard",
            f"brokers: data dir {env.get('SWITCHBOARD_DATA_DIR')!r} on {mounts.get('data')!r}",
        )
        fs_group = br["spec"]["template"]["spec"]["securityContext"].get("fsGroup")
        check(fs_group == 65532, f"brokers: the claim is not writable by the user (fsGroup {fs_group})")
    else:
        check(not claims and "data" not in mounts, "brokers: a claim although persistence is off")
        check("SWITCHBOARD_DATA_DIR" not in env, "brokers: a data dir although persistence is off")


def secret_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret", name)["data"].items()}


def check_cluster_security(
    w: dict[str, Any], values: dict[str, Any], container: dict[str, Any], env: dict[str, Any]
) -> None:
    """Each role runs with its own cluster credentials, or --insecure when told."""
    name = f"{w['kind']} {w['metadata']['name']}"
    sec = values["clusterSecurity"]
    spec = w["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    if not sec["enabled"]:
        check(env.get("SWITCHBOARD_INSECURE") == "true", f"{name}: insecure without --insecure")
        check("cluster-tls" not in volumes, f"{name}: TLS volume although security is off")
        return
    check("SWITCHBOARD_INSECURE" not in env, f"{name}: --insecure although security is on")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    cert = "$(SWITCHBOARD_NAME)" if w["kind"] == "StatefulSet" else "gateway"
    for var, path in [
        ("SWITCHBOARD_TLS_CA", f"{mounts['cluster-tls']}/ca.crt"),
        ("SWITCHBOARD_TLS_CERT", f"{mounts['cluster-tls']}/{cert}.crt"),
        ("SWITCHBOARD_TLS_KEY", f"{mounts['cluster-tls']}/{cert}.key"),
        ("SWITCHBOARD_GOSSIP_KEY", f"{mounts['gossip-key']}/gossip.key"),
    ]:
        check(env.get(var) == path, f"{name}: {var} is {env.get(var)}, not {path}")
    names = [e["name"] for e in container["env"]]
    check(names.index("SWITCHBOARD_NAME") < names.index("SWITCHBOARD_TLS_CERT"), f"{name}: name first")
    role = "broker" if w["kind"] == "StatefulSet" else "gateway"
    tls = volumes["cluster-tls"]
    if sec["certificates"] == "certManager":
        sources = [s["secret"]["name"] for s in tls["projected"]["sources"]]
        want = (
            [f"{FULLNAME}-broker-{i}-tls" for i in range(values["broker"]["replicas"])]
            if role == "broker"
            else [f"{FULLNAME}-gateway-tls"]
        )
        check(sources == want, f"{name}: certificates from {sources}")
    else:
        existing = sec["existingBrokerSecret" if role == "broker" else "existingGatewaySecret"]
        want = existing or f"{FULLNAME}-{role}-tls"
        check(tls["secret"]["secretName"] == want, f"{name}: certificates from {tls['secret']}")
    gossip = sec["existingGossipSecret"] or f"{FULLNAME}-gossip"
    check(volumes["gossip-key"]["secret"]["secretName"] == gossip, f"{name}: gossip key Secret")
    check(f"{FULLNAME}-ca" not in json.dumps(spec), f"{name}: mounts the CA key")


def check_credentials(
    docs: list[dict[str, Any]], values: dict[str, Any], gw: dict[str, Any], br: dict[str, Any]
) -> None:
    """The generated credentials: a certificate per broker ordinal and one for
    the gateways, each with its identity SAN, signed by the release's CA."""
    sec = values["clusterSecurity"]
    certs = kinds(docs, "Certificate")
    if not sec["enabled"] or sec["certificates"] == "existingSecret":
        check(not certs, "Certificates rendered without cert-manager")
        check(
            not [d for d in kinds(docs, "Secret") if d["metadata"]["name"].endswith("-tls")],
            "TLS Secrets rendered although not generated",
        )
        return
    brokers = [f"{FULLNAME}-broker-{i}" for i in range(values["broker"]["replicas"])]
    if sec["certificates"] == "certManager":
        by_name = {c["metadata"]["name"]: c["spec"] for c in certs}
        for n, role in [(b, "broker") for b in brokers] + [(f"{FULLNAME}-gateway", "gateway")]:
            spec = by_name.get(n)
            check(spec is not None, f"no Certificate {n}")
            check(spec["dnsNames"] == [f"{n}.{role}.switchboard"], f"Certificate {n}: {spec['dnsNames']}")
            check(spec["secretName"] == f"{n}-tls", f"Certificate {n}: Secret {spec['secretName']}")
            check(spec["issuerRef"]["name"] == sec["certManager"]["issuerRef"]["name"], "issuer")
        return
    check(not certs, "cert-manager Certificates rendered although generated")
    ca = secret_data(docs, f"{FULLNAME}-ca")
    broker = secret_data(docs, f"{FULLNAME}-broker-tls")
    gateway = secret_data(docs, f"{FULLNAME}-gateway-tls")
    check(sorted(broker) == sorted(["ca.crt"] + [f"{b}.{x}" for b in brokers for x in ("crt", "key")]),
          f"broker TLS Secret holds {sorted(broker)}")
    check(sorted(gateway) == ["ca.crt", "gateway.crt", "gateway.key"], f"gateway TLS Secret holds {sorted(gateway)}")
    check(broker["ca.crt"] == gateway["ca.crt"] == ca["ca.crt"], "one CA for both roles")
    for n, pem in [(b, broker[f"{b}.crt"]) for b in brokers] + [(f"{FULLNAME}-gateway", gateway["gateway.crt"])]:
        role = "gateway" if n.endswith("-gateway") else "broker"
        sans = x509_sans(pem)
        check(sans == [f"DNS:{n}.{role}.switchboard"], f"{n}: SANs {sans}")
        check(x509_verifies(pem, ca["ca.crt"]), f"{n}: not signed by the release's CA")
    key = base64.b64decode(secret_data(docs, f"{FULLNAME}-gossip")["gossip.key"].strip())
    check(len(key) == 32, f"gossip key of {len(key)} bytes")


def x509_sans(pem: str) -> list[str]:
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"],
                         input=pem, capture_output=True, text=True, check=True).stdout
    return [s.strip() for s in out.splitlines()[1].split(",")] if "\n" in out.strip() else []


def x509_verifies(pem: str, ca: str) -> bool:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "ca.crt").write_text(ca)
        Path(d, "leaf.crt").write_text(pem)
        return subprocess.run(["openssl", "verify", "-CAfile", f"{d}/ca.crt", f"{d}/leaf.crt"],
                              capture_output=True).returncode == 0


def check_network_policy(docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Cluster ports only from the release's pods; metrics only from where told."""
    policies = {p["metadata"]["name"]: p["spec"] for p in kinds(docs, "NetworkPolicy")}
    if not values["networkPolicy"]["enabled"]:
        check(not policies, "a NetworkPolicy although disabled")
        return
    release = {"app.kubernetes.io/name": "switchboard", "app.kubernetes.io/instance": RELEASE}
    rules: dict[tuple[str, int, str], Any] = {}
    for role in ("broker", "gateway"):
        spec = policies[f"{FULLNAME}-{role}"]
        check(spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == role, f"{role} policy selector")
        check(spec["policyTypes"] == ["Ingress"], f"{role} policy types")
        for rule in spec["ingress"]:
            for port in rule["ports"]:
                rules[(role, port["port"], port["protocol"])] = rule.get("from")
    own = [{"podSelector": {"matchLabels": release}}]
    for key in [("broker", 7000, "TCP"), ("broker", 7946, "UDP"), ("gateway", 7946, "UDP")]:
        check(rules.get(key) == own, f"{key} admitted from {rules.get(key)}, not only the release's pods")
    metrics = values["networkPolicy"]["metricsFrom"]
    check(rules.get(("broker", 9000, "TCP")) == (metrics or None), f"broker metrics from {rules.get(('broker', 9000, 'TCP'))}")
    clients = values["networkPolicy"]["clientsFrom"]
    check(rules[("gateway", 8000, "TCP")] == (clients or None), "gateway client port peers")
    check(len(rules) == 4 + bool(metrics), f"unexpected ports admitted: {sorted(rules)}")


def check_render(chart: helm.Chart, label: str, sets: list[str]) -> tuple[int, dict[str, Any]]:
    given = values_of(sets)
    chart.validate_schema(given)
    values = chart.merge_values(given)
    docs = render(chart, given)
    validated = validate(docs)

    gw = one(docs, "Deployment", f"{FULLNAME}-gateway")
    br = one(docs, "StatefulSet", f"{FULLNAME}-broker")
    headless = one(docs, "Service", f"{FULLNAME}-broker")
    client = one(docs, "Service", FULLNAME)
    secret = values["existingSecret"] or f"{FULLNAME}-config"

    # Replicas follow --set, each role on its own.
    check(br["spec"]["replicas"] == values["broker"]["replicas"], f"brokers: {br['spec'].get('replicas')}")
    auto = values["gateway"]["autoscaling"]
    hpas = kinds(docs, "HorizontalPodAutoscaler")
    if auto["enabled"]:
        check("replicas" not in gw["spec"], "the Deployment fixes replicas under an HPA")
        (hpa,) = hpas
        floor = auto.get("minReplicas") or values["gateway"]["replicas"]
        check(hpa["spec"]["minReplicas"] == floor, f"HPA floor {hpa['spec']['minReplicas']} != {floor}")
        check(hpa["spec"]["maxReplicas"] == auto["maxReplicas"], "HPA ceiling")
        check(hpa["spec"]["scaleTargetRef"]["name"] == gw["metadata"]["name"], "HPA target")
    else:
        check(not hpas, "an HPA without autoscaling")
        check(gw["spec"]["replicas"] == values["gateway"]["replicas"], f"gateways: {gw['spec'].get('replicas')}")

    # The headless service is the gossip seed, from the first pod on.
    check(headless["spec"]["clusterIP"] == "None", "broker service is not headless")
    check(headless["spec"]["publishNotReadyAddresses"] is True, "not-ready brokers unpublished")
    check(
        {"port": 7946, "protocol": "UDP"}.items()
        <= next(p for p in headless["spec"]["ports"] if p["name"] == "gossip").items(),
        "no UDP gossip port on the headless service",
    )
    check(br["spec"]["serviceName"] == headless["metadata"]["name"], "StatefulSet serviceName")
    check(
        headless["spec"]["selector"].items() <= br["spec"]["template"]["metadata"]["labels"].items(),
        "the headless service selects no broker",
    )
    check(
        client["spec"]["selector"].items() <= gw["spec"]["template"]["metadata"]["labels"].items(),
        "the client service selects no gateway",
    )
    check(client["spec"]["type"] == values["gateway"]["service"]["type"], "client service type")
    check(client["spec"]["ports"][0]["port"] == values["gateway"]["service"]["port"], "client port")

    check_workload(gw, values, 8000, secret)
    check_workload(br, values, 9000, secret)

    pdbs = {d["metadata"]["name"]: d for d in kinds(docs, "PodDisruptionBudget")}
    for role, workload in [("gateway", gw), ("broker", br)]:
        name = f"{FULLNAME}-{role}"
        if values[role]["pdb"]["enabled"]:
            check(name in pdbs, f"no PDB for {role}s")
            sel = pdbs[name]["spec"]["selector"]["matchLabels"]
            check(sel == workload["spec"]["selector"]["matchLabels"], f"{role} PDB selects other pods")
        else:
            check(name not in pdbs, f"a {role} PDB although disabled")

    check_replication(br, values)
    check_credentials(docs, values, gw, br)
    check_network_policy(docs, values)
    check_edge_tls(docs, values, gw, client)
    check_ingress(docs, values, client)

    secrets = [d for d in kinds(docs, "Secret") if d["metadata"]["name"] == f"{FULLNAME}-config"]
    if values["existingSecret"]:
        check(not secrets, "a Secret rendered although existingSecret is set")
    else:
        (s,) = secrets
        data = {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        check(data["switchboard.toml"] == values["config"], "config in the Secret")
        check(data["hmac-secret"] != "" and data["api-keys"] != "", "empty generated secrets")
        if values["auth"]["hmacSecret"]:
            check(data["hmac-secret"] == values["auth"]["hmacSecret"], "given HMAC secret")
        if values["auth"]["apiKeys"]:
            check(data["api-keys"] == ",".join(values["auth"]["apiKeys"]), "given API keys")
        if values["auth"]["rsaPublicKey"]:
            check(data["rsa-public-key.pem"] == values["auth"]["rsaPublicKey"], "RSA key file")

    monitors = kinds(docs, "ServiceMonitor")
    if values["metrics"]["serviceMonitor"]["enabled"]:
        (sm,) = monitors
        check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
        sel = sm["spec"]["selector"]["matchLabels"]
        for svc in (headless, client):
            check(sel.items() <= svc["metadata"]["labels"].items(), f"ServiceMonitor misses {svc['metadata']['name']}")
            check(any(p["name"] in ("http", "https") for p in svc["spec"]["ports"]), "no port to scrape")
        for k, v in values["metrics"]["serviceMonitor"]["labels"].items():
            check(sm["metadata"]["labels"].get(k) == v, f"ServiceMonitor label {k}")
    else:
        check(not monitors, "a ServiceMonitor although disabled")

    tag = values["image"]["tag"] or chart.metadata["appVersion"]
    for w in (gw, br):
        c = w["spec"]["template"]["spec"]["containers"][0]
        check(c["image"] == f"{values['image']['repository']}:{tag}", f"image {c['image']}")
    return validated, values


EDGE_TLS_DIR = "/etc/switchboard-edge-tls"


def check_edge_tls(docs: list[dict[str, Any]], values: dict[str, Any], gw: dict[str, Any], client: dict[str, Any]) -> None:
    """Native TLS on the gateways' port: the Secret mounted as a directory
    (so that its updates reach the files the gateway re-reads), the flags'
    variables, HTTPS probes, an https Service port, and HTTPS scraping."""
    tls = values["gateway"]["tls"]
    spec = gw["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = env_of(container)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    schemes = {container[p]["httpGet"].get("scheme", "HTTP") for p in ("readinessProbe", "livenessProbe")}
    (port,) = client["spec"]["ports"]
    monitors = kinds(docs, "ServiceMonitor")
    https_endpoints = [e for m in monitors for e in m["spec"]["endpoints"] if e["port"] == "https"]
    annotations = gw["spec"]["template"]["metadata"].get("annotations", {})
    if tls["enabled"]:
        check(env.get("SWITCHBOARD_CLIENT_TLS_CERT") == f"{EDGE_TLS_DIR}/tls.crt", "gateway: TLS certificate variable")
        check(env.get("SWITCHBOARD_CLIENT_TLS_KEY") == f"{EDGE_TLS_DIR}/tls.key", "gateway: TLS key variable")
        check(volumes["edge-tls"]["secret"]["secretName"] == tls["secretName"], "gateway: TLS Secret volume")
        check(mounts["edge-tls"]["mountPath"] == EDGE_TLS_DIR and "subPath" not in mounts["edge-tls"],
              "gateway: TLS Secret mounted as a directory (a subPath never updates)")
        check(schemes == {"HTTPS"}, f"gateway probes over {schemes}")
        check(port["name"] == "https" and port.get("appProtocol") == "https", f"client Service port {port}")
        if values["metrics"]["podAnnotations"]:
            check(annotations.get("prometheus.io/scheme") == "https", "gateway scrape annotation scheme")
        if values["metrics"]["serviceMonitor"]["enabled"]:
            check(len(https_endpoints) == 1 and https_endpoints[0]["scheme"] == "https", "no HTTPS scrape")
    else:
        check(not any(k.startswith("SWITCHBOARD_CLIENT_TLS") for k in env), "gateway TLS flags without TLS")
        check("edge-tls" not in volumes and "edge-tls" not in mounts, "a TLS Secret mounted without TLS")
        check(schemes == {"HTTP"}, f"gateway probes over {schemes}")
        check(port["name"] == "http", f"client Service port {port}")
        check(not https_endpoints, "an HTTPS scrape without TLS")
        check(values["gateway"]["service"]["type"] == "ClusterIP" or values["gateway"]["service"]["allowPlaintext"],
              "a plaintext port outside the cluster without allowPlaintext")


def check_ingress(docs: list[dict[str, Any]], values: dict[str, Any], client: dict[str, Any]) -> None:
    ing = values["ingress"]
    ingresses = kinds(docs, "Ingress")
    if not ing["enabled"]:
        check(not ingresses, "an Ingress although disabled")
        return
    (ingress,) = ingresses
    spec = ingress["spec"]
    (rule,) = spec["rules"]
    check(rule["host"] == ing["host"], f"Ingress host {rule['host']}")
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    check(backend["name"] == client["metadata"]["name"], f"Ingress backend {backend['name']}")
    check(backend["port"]["number"] == client["spec"]["ports"][0]["port"], "Ingress backend port")
    check(path["path"] == "/" and path["pathType"] == "Prefix", "Ingress covers /ws, /api/ and the rest")
    if ing["tls"]["enabled"]:
        check(spec.get("tls") == [{"hosts": [ing["host"]], "secretName": ing["tls"]["secretName"]}],
              f"Ingress TLS {spec.get('tls')}")
    else:
        check("tls" not in spec, "Ingress TLS although disabled")
    if ing["className"]:
        check(spec.get("ingressClassName") == ing["className"], "Ingress class")
    for k, v in ing["annotations"].items():
        check(ingress["metadata"].get("annotations", {}).get(k) == v, f"Ingress annotation {k}")


def dump_credentials(docs: list[dict[str, Any]], out: Path) -> None:
    """The files a broker and a gateway pod would find mounted."""
    out.mkdir(parents=True, exist_ok=True)
    broker = secret_data(docs, f"{FULLNAME}-broker-tls")
    gateway = secret_data(docs, f"{FULLNAME}-gateway-tls")
    files = {
        "ca.crt": broker["ca.crt"],
        f"{FULLNAME}-broker-0.crt": broker[f"{FULLNAME}-broker-0.crt"],
        f"{FULLNAME}-broker-0.key": broker[f"{FULLNAME}-broker-0.key"],
        "gateway.crt": gateway["gateway.crt"],
        "gateway.key": gateway["gateway.key"],
        "gossip.key": secret_data(docs, f"{FULLNAME}-gossip")["gossip.key"],
    }
    for name, text in files.items():
        (out / name).write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("chart")
    parser.add_argument("--dump-config", help="write the default switchboard.toml here")
    parser.add_argument(
        "--dump-credentials",
        help="write the default render's cluster credentials into this folder: ca.crt, "
        "the first broker's and the gateways' certificate and key, gossip.key",
    )
    args = parser.parse_args()
    print(f"helm SDK {helm.helm_sdk_version()} (helm-c {helm.helm_c_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__}")
    ok = 0
    try:
        for version in KUBE_VERSIONS:
            report = helm.lint(args.chart, strict=True, kube_version=f"v{version}")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            check(not problems, f"helm lint (Kubernetes {version}): {problems}")
            print(f"ok - helm lint --strict, Kubernetes {version}")
            ok += 1
        with helm.Chart.load(args.chart) as chart:
            for label, sets in VALUE_SETS.items():
                n, values = check_render(chart, label, sets)
                shown = " ".join(f"--set {s}" for s in sets) or "(defaults)"
                print(f"ok - {label}: {shown}: {n} manifest validations, assertions hold")
                ok += 1
                if label == "defaults" and args.dump_config:
                    Path(args.dump_config).write_text(values["config"])
                if label == "defaults" and args.dump_credentials:
                    dump_credentials(render(chart, {}), Path(args.dump_credentials))
            for label, (bad, where) in BAD_VALUES.items():
                given = values_of([bad])
                try:
                    chart.validate_schema(given)
                except helm.HelmValuesError as e:
                    check(where in str(e), f"schema refuses {bad} but not at {where}: {e}")
                else:
                    raise Failed(f"values.schema.json accepts {label}: --set {bad}")
                # An install validates against the schema too; so must render.
                try:
                    chart.render(given, name=RELEASE, namespace=NAMESPACE, is_install=True)
                except helm.HelmError:
                    pass
                else:
                    raise Failed(f"the chart renders with {label}: --set {bad}")
                print(f"ok - schema refuses {label}: --set {bad} ({where})")
                ok += 1
    except Failed as e:
        print(f"FAILED - {e}")
        return 1
    print(f"helm chart: all {ok} checks ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

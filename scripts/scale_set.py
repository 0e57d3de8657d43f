#!/usr/bin/env python3
"""A realistic container image set at a chosen size, made offline and deterministically.

Used by scripts/scale-set.sh (which picks the cache directory) and scripts/bench-scale.sh.
Run `scripts/scale-set.sh --help` for what it makes. Everything here is a pure function of
(GB, seed): the same arguments give byte-identical output, whatever the number of cores.

The shape follows real image sets: a few distro-like base layers under most images, a middle
tier (language runtimes, CA bundles) shared by a few images each, and mostly unique
application layers; one image carries one very large layer (30% of the set: model weights or
a data image), one name is a multi-arch index. Layers are real ustar archives (sorted names,
mtime 0, owners 0) compressed with gzip (header mtime 0); files are either compressible (text,
JSON, ELF-like code) or incompressible (random bytes, like compressed assets).

Memory stays bounded: every layer is streamed from a seeded generator through tar, deflate and
both digests straight to its blob file; nothing holds a layer in RAM.
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import struct
import sys
import tarfile
import time
import zlib

GB = 10**9
MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# Stored (gzip) bytes per content byte, measured on this generator's own data at level 1;
# used only to aim each layer at its stored size (set.json reports the real sizes).
STORED_RATIO = {"random": 1.0, "text": 0.36, "elf": 0.55}
# Deflate level for compressible files: 1 keeps generation fast. Random files are written as
# stored deflate blocks (level 0), which is what any gzip level produces for them anyway.
TEXT_LEVEL = 1

# ---- content ---------------------------------------------------------------------------------
WORDS = (
    "the of and to in is for on with as by at from that this be are was or an it not which "
    "config server client request response error warning info debug trace value key name type "
    "version image layer container pod node cluster service deployment namespace label annotation "
    "true false null enabled disabled default timeout retry port host path file directory user "
    "group mode size count limit memory cpu disk network address route table rule policy token "
    "secret certificate key store cache index manifest digest sha256 blob upload download mirror "
    "registry library module package import export function return struct interface method class "
    "http https tcp udp dns proxy gateway ingress egress metrics logging tracing health ready live"
).split()


def text_corpus(rng, size):
    """Pseudo-text of SIZE bytes: lines of words, key: value pairs and JSON-ish records."""
    out, n = [], 0
    while n < size:
        kind = rng.random()
        if kind < 0.4:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + ".\n"
        elif kind < 0.7:
            line = "%s_%s: %s\n" % (rng.choice(WORDS), rng.choice(WORDS), rng.choice(
                [str(rng.randint(0, 65535)), rng.choice(WORDS), '"%s/%s"' % (rng.choice(WORDS), rng.choice(WORDS))]))
        else:
            line = '{"%s": "%s", "%s": %d, "%s": %s}\n' % (
                rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS), rng.randint(0, 10**6),
                rng.choice(WORDS), rng.choice(["true", "false", "null"]))
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def elf_corpus(rng, size):
    """Machine-code-like bytes: a skewed alphabet of opcodes with random operands."""
    common = bytes(rng.randrange(256) for _ in range(24))
    out = bytearray()
    while len(out) < size:
        op = rng.choice(common) if rng.random() < 0.75 else rng.randrange(256)
        out.append(op)
        if rng.random() < 0.35:
            out += rng.randbytes(rng.choice((1, 2, 4)))
        elif rng.random() < 0.3:
            out += b"\x00" * rng.choice((1, 3, 4, 7))
    return bytes(out[:size])


ELF_HEADER = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x03\x00\x3e\x00\x01\x00\x00\x00"


class Content:
    """A file's bytes, produced on demand by tarfile's copy loop (read(n) only)."""

    def __init__(self, kind, size, rng, corpora):
        self.kind, self.left, self.rng, self.corpora = kind, size, rng, corpora
        self.first = True

    def read(self, n):
        n = min(n, self.left)
        if n <= 0:
            return b""
        self.left -= n
        if self.kind == "random":
            return self.rng.randbytes(n)
        corpus = self.corpora[self.kind]
        parts, got = [], 0
        if self.first and self.kind == "elf":
            parts.append(ELF_HEADER)
            got = len(ELF_HEADER)
        self.first = False
        # Slices of the corpus at random places: locally as redundant as real text or code.
        while got < n:
            length = min(n - got, self.rng.randint(256, 4096))
            start = self.rng.randrange(len(corpus) - length)
            parts.append(corpus[start:start + length])
            got += length
        return b"".join(parts)[:n]


class GzipSink:
    """The write side of a layer: counts and hashes the tar, deflates it (level per file kind),
    hashes and writes the gzip member."""

    def __init__(self, path):
        self.out = open(path, "wb")
        self.tar_sha = hashlib.sha256()
        self.gz_sha = hashlib.sha256()
        self.crc = 0
        self.tar_len = 0
        self.gz_len = 0
        self.level = None
        self.deflate = None
        # gzip header: no name, mtime 0, no extra flags, OS unknown.
        self._emit(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        self.set_level(TEXT_LEVEL)

    def _emit(self, b):
        if b:
            self.out.write(b)
            self.gz_sha.update(b)
            self.gz_len += len(b)

    def set_level(self, level):
        # A raw deflate stream may change compressors at a sync point: the blocks stay valid and
        # the new one simply refers to nothing written before it.
        if level == self.level:
            return
        if self.deflate is not None:
            self._emit(self.deflate.flush(zlib.Z_SYNC_FLUSH))
        self.level = level
        self.deflate = zlib.compressobj(level, zlib.DEFLATED, -15, 9)

    def write(self, b):
        self.tar_sha.update(b)
        self.crc = zlib.crc32(b, self.crc)
        self.tar_len += len(b)
        self._emit(self.deflate.compress(b))
        return len(b)

    def tell(self):
        return self.tar_len

    def close(self):
        self._emit(self.deflate.flush(zlib.Z_FINISH))
        self._emit(struct.pack("<II", self.crc, self.tar_len & 0xFFFFFFFF))
        self.out.close()


# ---- layers ------------------------------------------------------------------------------------
# A layer spec: (layer_id, flavour, stored_target, mix) with mix = {kind: share of stored bytes}.
FLAVOURS = {
    "base": ("usr/lib/x86_64-linux-gnu", "usr/bin", "usr/share/doc", "etc"),
    "runtime": ("usr/local/lib", "usr/local/bin", "usr/local/share"),
    "app": ("app", "app/lib", "app/static", "app/config"),
    "data": ("models", "models/shards"),
}
# (mu, sigma) of the log-normal file sizes: mostly small files; model shards are large.
FILE_SIZES = {"base": (9.5, 1.8), "runtime": (10, 1.8), "app": (10.5, 1.9), "data": (19, 1.0)}
EXT = {"random": (".gz", ".png", ".jar", ".woff2", ".zip"), "text": (".json", ".yaml", ".txt", ".conf", ".html"),
       "elf": (".so", "", ".so.1", ".bin")}


def file_plan(rng, flavour, mix, max_file):
    """The files of a layer: sorted (path, kind, size) from the content bytes each kind needs."""
    dirs = FLAVOURS[flavour]
    files = {}
    for kind, share in sorted(mix.items()):
        need = int(share / STORED_RATIO[kind])
        i = 0
        while need > 0:
            # Mostly small files, a few large ones, as in real layers.
            size = int(min(max_file, rng.lognormvariate(*FILE_SIZES[flavour])))
            size = max(64, min(size, need))
            need -= size
            d = rng.choice(dirs)
            name = "%s/%s-%s-%04d%s" % (d, rng.choice(WORDS), kind[0], i, rng.choice(EXT[kind]))
            files[name] = (kind, size)
            i += 1
    return sorted((p, k, s) for p, (k, s) in files.items())


_CORPORA = {}


def corpora_for(seed, layer_id):
    """One of eight text/code corpora, picked by the layer's id and made once per process."""
    key = zlib.crc32(layer_id.encode()) % 8
    if key not in _CORPORA:
        crng = random.Random("%s/corpus/%d" % (seed, key))
        _CORPORA[key] = {"text": text_corpus(crng, 256 * 1024), "elf": elf_corpus(crng, 128 * 1024)}
    return _CORPORA[key]


def tar_header(path, kind, size):
    ti = tarfile.TarInfo(path)
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
    if kind == "dir":
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    else:
        ti.size, ti.mode = size, 0o755 if kind == "elf" else 0o644
    return ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def make_layer(args):
    """Writes one layer blob into BLOBS; returns its facts. Runs in a worker process."""
    blobs, seed, spec = args
    layer_id, flavour, stored, mix, max_file = spec
    rng = random.Random("%s/layer/%s" % (seed, layer_id))
    plan = file_plan(rng, flavour, {k: v * stored for k, v in mix.items()}, max_file)
    corpora = corpora_for(seed, layer_id)
    tmp = os.path.join(blobs, ".tmp-layer-%s" % layer_id)
    sink = GzipSink(tmp)
    made_dirs = set()

    def add_dir(d):
        if not d or d in made_dirs:
            return
        add_dir(os.path.dirname(d))
        made_dirs.add(d)
        sink.write(tar_header(d + "/", "dir", 0))

    # The tar is written by hand (ustar headers from tarfile, content streamed in 1 MiB
    # chunks, block padding, two zero blocks, record padding): the same bytes tarfile writes.
    for path, kind, size in plan:
        sink.set_level(TEXT_LEVEL)
        add_dir(os.path.dirname(path))
        sink.write(tar_header(path, kind, size))
        sink.set_level(0 if kind == "random" else TEXT_LEVEL)
        src = Content(kind, size, rng, corpora)
        while True:
            chunk = src.read(MiB)
            if not chunk:
                break
            sink.write(chunk)
        sink.set_level(TEXT_LEVEL)
        pad = (-size) % tarfile.BLOCKSIZE
        if pad:
            sink.write(b"\x00" * pad)
    sink.write(b"\x00" * (2 * tarfile.BLOCKSIZE))
    pad = (-sink.tar_len) % tarfile.RECORDSIZE
    if pad:
        sink.write(b"\x00" * pad)
    sink.close()
    digest = sink.gz_sha.hexdigest()
    os.replace(tmp, os.path.join(blobs, digest))
    return {"id": layer_id, "digest": "sha256:" + digest, "size": sink.gz_len,
            "diff_id": "sha256:" + sink.tar_sha.hexdigest(), "tar_size": sink.tar_len, "files": len(plan)}


# ---- names -------------------------------------------------------------------------------------
KNOWN = [
    "docker.io/library/nginx:1.27.3", "docker.io/library/redis:7.4.1", "docker.io/library/postgres:16.6",
    "docker.io/library/mariadb:11.4.4", "docker.io/library/rabbitmq:3.13.7-management",
    "docker.io/library/memcached:1.6.32", "docker.io/library/haproxy:3.0.6", "docker.io/library/traefik:v3.2.1",
    "docker.io/library/busybox:1.37.0", "docker.io/library/alpine:3.20.3", "docker.io/library/python:3.12.8-slim",
    "docker.io/library/node:22.12.0-bookworm-slim", "docker.io/library/eclipse-temurin:21.0.5_11-jre",
    "docker.io/library/golang:1.23.4", "docker.io/library/mongo:8.0.3", "docker.io/library/elasticsearch:8.16.1",
    "docker.io/bitnami/kafka:3.9.0", "docker.io/bitnami/zookeeper:3.9.3", "docker.io/grafana/grafana:11.3.1",
    "docker.io/grafana/loki:3.3.1", "docker.io/grafana/promtail:3.3.1", "docker.io/minio/minio:RELEASE.2024-11-07T00-52-20Z",
    "docker.io/otel/opentelemetry-collector-contrib:0.115.1", "docker.io/jaegertracing/all-in-one:1.64.0",
    "quay.io/prometheus/prometheus:v2.55.1", "quay.io/prometheus/node-exporter:v1.8.2",
    "quay.io/prometheus/alertmanager:v0.27.0", "quay.io/prometheus/blackbox-exporter:v0.25.0",
    "quay.io/prometheus-operator/prometheus-operator:v0.78.2",
    "quay.io/prometheus-operator/prometheus-config-reloader:v0.78.2", "quay.io/jetstack/cert-manager-controller:v1.16.2",
    "quay.io/jetstack/cert-manager-webhook:v1.16.2", "quay.io/jetstack/cert-manager-cainjector:v1.16.2",
    "quay.io/coreos/etcd:v3.5.17", "quay.io/keycloak/keycloak:26.0.7", "quay.io/cilium/cilium:v1.16.4",
    "quay.io/cilium/operator-generic:v1.16.4", "quay.io/argoproj/argocd:v2.13.2", "quay.io/tigera/operator:v1.36.2",
    "registry.k8s.io/kube-apiserver:v1.31.4", "registry.k8s.io/kube-controller-manager:v1.31.4",
    "registry.k8s.io/kube-scheduler:v1.31.4", "registry.k8s.io/kube-proxy:v1.31.4", "registry.k8s.io/pause:3.10",
    "registry.k8s.io/etcd:3.5.15-0", "registry.k8s.io/coredns/coredns:v1.11.3",
    "registry.k8s.io/ingress-nginx/controller:v1.12.0", "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.5.0",
    "registry.k8s.io/metrics-server/metrics-server:v0.7.2", "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.14.0",
    "registry.k8s.io/sig-storage/csi-provisioner:v5.1.0", "registry.k8s.io/sig-storage/csi-attacher:v4.7.0",
    "registry.k8s.io/sig-storage/csi-resizer:v1.12.0", "registry.k8s.io/sig-storage/csi-snapshotter:v8.1.0",
    "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.12.0", "registry.k8s.io/sig-storage/livenessprobe:v2.14.0",
    "ghcr.io/fluxcd/source-controller:v1.4.1", "ghcr.io/fluxcd/kustomize-controller:v1.4.0",
    "ghcr.io/fluxcd/helm-controller:v1.1.0", "ghcr.io/kyverno/kyverno:v1.13.2", "ghcr.io/dexidp/dex:v2.41.1",
    "gcr.io/distroless/static-debian12:nonroot", "gcr.io/kaniko-project/executor:v1.23.2",
    "public.ecr.aws/aws-ec2/aws-node-termination-handler:v1.24.0", "mcr.microsoft.com/dotnet/aspnet:8.0.11",
]
APP_WORDS = ("billing", "ledger", "orders", "payments", "catalog", "search", "users", "auth", "notify", "reports",
             "gateway", "inventory", "shipping", "pricing", "audit", "export", "import", "scheduler", "render",
             "documents", "archive", "geo", "tickets", "chat", "media")
APP_KINDS = ("api", "worker", "web", "sync", "cron", "ui", "service")


def image_names(rng, count):
    names = list(KNOWN)
    rng.shuffle(names)
    names = names[:max(0, min(len(names), count * len(KNOWN) // 300))]
    seen = set(names)
    while len(names) < count:
        r = rng.random()
        ver = "%d.%d.%d" % (rng.randint(0, 5), rng.randint(0, 30), rng.randint(0, 12))
        if r < 0.35:
            n = "ghcr.io/acme/%s-%s:%s" % (rng.choice(APP_WORDS), rng.choice(APP_KINDS), ver)
        elif r < 0.9:
            n = "harbor.corp.example/team-%02d/svc-%03d:%s" % (rng.randint(1, 24), rng.randint(1, 999), ver)
        else:
            n = "registry.gitlab.corp.example/platform/%s/%s:%s" % (
                rng.choice(APP_WORDS), rng.choice(APP_KINDS), ver)
        if n not in seen:
            seen.add(n)
            names.append(n)
    return names


# ---- the set -------------------------------------------------------------------------------------
def plan_set(gb, seed):
    """Layers and images: a pure function of (gb, seed)."""
    rng = random.Random("%s/plan" % seed)
    total = int(gb * GB)
    count = 300 if gb >= 1 else max(12, int(300 * gb))
    scale = gb / 20.0  # sizes of the shared tiers are given at 20 GB
    layers = []

    def layer(lid, flavour, stored, mix, max_file=64 * MiB):
        layers.append((lid, flavour, max(int(stored), 4096), mix, max_file))
        return lid

    big = layer("big", "data", total * 0.30, {"random": 0.97, "text": 0.03}, max_file=512 * MiB)
    base_mix = {"elf": 0.55, "text": 0.35, "random": 0.10}
    bases = [layer("base-%d" % i, "base", s * 1e6 * scale, base_mix)
             for i, s in enumerate((80, 48, 30, 22, 12, 5))]
    runtime_mix = {"elf": 0.45, "text": 0.30, "random": 0.25}
    middles = [layer("mid-%02d" % i, "runtime", rng.uniform(10, 60) * 1e6 * scale, runtime_mix) for i in range(20)]
    shared_bytes = sum(sz for _, _, sz, _, _ in layers[1:])
    # The first image carries the big layer: a model server with its weights.
    names = ["harbor.corp.example/ml/model-server:2.3.0"] + image_names(rng, count - 1)
    # The multi-arch image gets one more unique layer per extra platform, so it counts twice.
    multi = names[len(names) // 2]
    # Unique layers: 1-6 per image (per platform), sizes from a heavy-tailed spread summing to
    # what is left of the budget.
    images = []
    weights = []
    for idx, name in enumerate(names):
        plats = ["amd64", "arm64"] if name == multi else ["amd64"]
        for plat in plats:
            base = bases[min(int(rng.expovariate(0.9)), len(bases) - 1)] if rng.random() < 0.85 else None
            mids = rng.sample(middles, k=min(len(middles), int(rng.triangular(0, 3, 0.5))))
            room = 8 - (1 if base else 0) - len(mids) - (1 if idx == 0 and plat == "amd64" else 0)
            n_unique = max(1, min(room, int(rng.triangular(1, 6.99, 2))))
            uniq = []
            for j in range(n_unique):
                weights.append(rng.lognormvariate(0, 1.1))
                uniq.append("u-%03d-%s-%d" % (idx, plat, j))
            images.append({"name": name, "platform": plat, "base": base, "mids": mids, "unique": uniq})
    # The big layer goes on the first image (an ML model server), on top of its own layers.
    images[0]["big"] = True
    left = max(total - total * 0.30 - shared_bytes, count * 8192)
    wsum = sum(weights)
    k = 0
    mixes = ({"elf": 0.4, "text": 0.3, "random": 0.3}, {"text": 0.7, "elf": 0.2, "random": 0.1},
             {"random": 0.8, "text": 0.2}, {"elf": 0.7, "text": 0.3})
    for im in images:
        for lid in im["unique"]:
            layer(lid, "app", left * weights[k] / wsum, rng.choice(mixes), max_file=32 * MiB)
            k += 1
    return layers, images, names, big


def pool_order(layers):
    # Largest first so that the big layer overlaps with the many small ones.
    return sorted(layers, key=lambda spec: -spec[2])


def blob_json(blobs, obj):
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def short(name):
    """A Kubernetes-legal name from an image reference."""
    repo = name.rsplit(":", 1)[0].split("/")[-1]
    return "".join(c if c.isalnum() else "-" for c in repo.lower()).strip("-")[:40] or "app"


def write_manifests(out, names):
    mdir = os.path.join(out, "manifests")
    os.makedirs(mdir)

    def container(i, name):
        return "      - name: c%d-%s\n        image: %s\n" % (i, short(name), name)

    def pod_spec(group, indent):
        body = "    spec:\n      containers:\n" + "".join(container(i, n) for i, n in enumerate(group))
        return "".join(indent + line + "\n" for line in body.rstrip("\n").split("\n"))

    rest = list(names)
    ds, cron, sts = rest[:3], rest[3:5], rest[5:8]
    rest = rest[8:]
    docs = []
    for i in range(0, len(rest), 3):
        group = rest[i:i + 3]
        nm = ("app-%03d-%s" % (i // 3, short(group[0])))[:52].rstrip("-")
        docs.append("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: %s\nspec:\n  replicas: 1\n"
                    "  selector:\n    matchLabels:\n      app: %s\n  template:\n    metadata:\n"
                    "      labels:\n        app: %s\n%s" % (nm, nm, nm, pod_spec(group, "")))
    with open(os.path.join(mdir, "deployments.yaml"), "w") as f:
        f.write("---\n".join(docs))
    with open(os.path.join(mdir, "daemonset.yaml"), "w") as f:
        f.write("apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: node-agents\nspec:\n  selector:\n"
                "    matchLabels:\n      app: node-agents\n  template:\n    metadata:\n      labels:\n"
                "        app: node-agents\n%s" % pod_spec(ds, ""))
    with open(os.path.join(mdir, "cronjob.yaml"), "w") as f:
        f.write("apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly-report\nspec:\n"
                "  schedule: \"0 2 * * *\"\n  jobTemplate:\n    spec:\n      template:\n%s"
                "          restartPolicy: OnFailure\n" % pod_spec(cron, "    "))
    with open(os.path.join(mdir, "statefulset.yaml"), "w") as f:
        f.write("apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: datastore\nspec:\n"
                "  serviceName: datastore\n  replicas: 1\n  selector:\n    matchLabels:\n      app: datastore\n"
                "  template:\n    metadata:\n      labels:\n        app: datastore\n%s" % pod_spec(sts, ""))


KUBEFILE = """FROM scratch
COPY manifests manifests
ARG RUNTIME=runtime
COPY $RUNTIME/bin bin
COPY $RUNTIME/cni cni
"""


def generate(gb, seed, out, jobs, script_hash):
    t0 = time.time()
    layers, images, names, big = plan_set(gb, seed)
    layout = os.path.join(out, "images", "scale")
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    facts = {}
    work = [(blobs, seed, spec) for spec in pool_order(layers)]
    with multiprocessing.Pool(jobs) as pool:
        for i, f in enumerate(pool.imap_unordered(make_layer, work), 1):
            facts[f["id"]] = f
            if i % 100 == 0 or i == len(work):
                print("  %d/%d layers" % (i, len(work)), file=sys.stderr)
    uses = {}
    by_name = {}
    for im in images:
        ids = ([im["base"]] if im["base"] else []) + im["mids"] + im["unique"] + ([big] if im.get("big") else [])
        for lid in ids:
            uses[lid] = uses.get(lid, 0) + 1
        ls = [facts[lid] for lid in ids]
        config = {
            "architecture": im["platform"], "os": "linux", "created": "1970-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_IMAGE=" + im["name"]],
                       "Cmd": ["/app/run"], "WorkingDir": "/app"},
            "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in ls]},
        }
        cfg = blob_json(blobs, config)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": dict(mediaType=OCI_CONFIG, **cfg),
                    "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": l["digest"], "size": l["size"]} for l in ls]}
        desc = dict(mediaType=OCI_MANIFEST, **blob_json(blobs, manifest))
        desc["platform"] = {"architecture": im["platform"], "os": "linux"}
        by_name.setdefault(im["name"], []).append(desc)
    entries = []
    for name in names:
        descs = by_name[name]
        if len(descs) == 1:
            d = dict(descs[0])
            del d["platform"]
        else:
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}
            d = dict(mediaType=OCI_INDEX, **blob_json(blobs, index))
        d["annotations"] = {REF_NAME: name}
        entries.append(d)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, f,
                  separators=(",", ":"), sort_keys=True)
    with open(os.path.join(out, "imageList"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    write_manifests(out, names)
    with open(os.path.join(out, "Kubefile"), "w") as f:
        f.write(KUBEFILE)
    stored = {lid: facts[lid]["size"] for lid in facts}
    total = sum(os.path.getsize(os.path.join(blobs, b)) for b in os.listdir(blobs))
    summary = {
        "gb": gb, "seed": seed, "units": "GB = 10^9 bytes", "generator_sha256": script_hash,
        "images": len(names), "manifests": len(images), "multi_arch": [n for n, d in by_name.items() if len(d) > 1],
        "layers": len(facts), "files": sum(f["files"] for f in facts.values()),
        "total_bytes": total, "layer_bytes": sum(stored.values()),
        "uncompressed_layer_bytes": sum(f["tar_size"] for f in facts.values()),
        "largest_layer": {"digest": facts[big]["digest"], "bytes": facts[big]["size"], "image": names[0]},
        "shared_layers": sum(1 for lid in stored if uses.get(lid, 0) > 1),
        "shared_layer_bytes": sum(s for lid, s in stored.items() if uses.get(lid, 0) > 1),
        "unique_layer_bytes": sum(s for lid, s in stored.items() if uses.get(lid, 0) == 1),
        "layer_references_bytes": sum(s * uses.get(lid, 0) for lid, s in stored.items()),
    }
    with open(os.path.join(out, "set.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    print("generated %d images, %d layers, %d bytes in %.1fs" % (len(names), len(facts), total, time.time() - t0),
          file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description="Generate a scale image set (see scripts/scale-set.sh --help).")
    p.add_argument("gb", type=float)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="a directory that must not exist yet")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--script-hash", default="")
    a = p.parse_args()
    if a.gb <= 0 or a.gb > 1000:
        p.error("GB must be in (0, 1000]")
    if os.path.exists(a.out):
        p.error("%s exists already" % a.out)
    generate(a.gb, a.seed, a.out, a.jobs, a.script_hash)


if __name__ == "__main__":
    main()

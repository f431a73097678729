#!/usr/bin/env bash
# Builds the compose cluster's images without any container registry, on a
# Debian or Ubuntu host with Docker:
#
#   switchboard-base:local        glibc and the binary's other shared
#                                 libraries, /etc/passwd with distroless'
#                                 nonroot user (65532): a stand-in for
#                                 gcr.io/distroless/cc-debian12:nonroot
#   switchboard:local (--tag)     deploy/image/Dockerfile.local on that base:
#                                 the runtime stage of ./Dockerfile
#   switchboard-haproxy:local     Debian's haproxy, for haproxy:3.0
#   switchboard-prometheus:local  Debian's prometheus, for prom/prometheus
#
# Each image is a root filesystem of one program and the libraries ldd
# names, imported with `docker import`. haproxy and prometheus come from
# `apt-get download` (no install, nothing started); the debs are kept in
# target/deploy/ and those two images are built once.
#
#   deploy/local-images.sh                       # cargo build --release first
#   deploy/local-images.sh --binary PATH --tag switchboard:test
#   docker compose --env-file deploy/local.env up -d
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

binary=""
tag="switchboard:local"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# The daemon may be older than the CLI and BuildKit needs the buildx
# plugin, which Debian's docker.io lacks: the classic builder does.
export DOCKER_BUILDKIT=0

work="$root/target/deploy"
mkdir -p "$work"
started=$SECONDS

# Copies every shared library ldd finds for each program into the root
# filesystem $1, at the same paths. LD_LIBRARY_PATH lets ldd find libraries
# that came in downloaded debs.
copy_with_libs() {
  local rootfs=$1; shift
  local bin lib
  for bin in "$@"; do
    local missing
    missing=$(ldd "$bin" | grep 'not found' || true)
    if [ -n "$missing" ]; then
      echo "libraries of $bin not found:" >&2
      echo "$missing" >&2
      exit 1
    fi
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      # A library from an unpacked deb goes where the package puts it.
      local dest=${lib#"$work/pkgroot"}
      mkdir -p "$rootfs$(dirname "$dest")"
      cp -L "$lib" "$rootfs$dest"
    done
  done
}

# What every base holds besides the programs: users like distroless'
# (root, nobody, nonroot), name resolution from /etc/hosts then DNS (Docker
# mounts hosts and resolv.conf), and a /tmp.
base_files() {
  local rootfs=$1
  mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/home/nonroot"
  chmod 1777 "$rootfs/tmp"
  cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
  echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
  # glibc loads these by name for the lines above where they are not
  # built in; distroless carries them too.
  local nss
  for nss in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2; do
    if [ -e "$nss" ]; then
      mkdir -p "$rootfs$(dirname "$nss")"
      cp -L "$nss" "$rootfs$nss"
    fi
  done
}

# Imports the root filesystem $1 as image $2, with Dockerfile-like changes.
# The archive is reproducible and its digest is kept as a label: an
# unchanged root filesystem is not imported again (which would leave the
# previous image behind, nameless).
import_rootfs() {
  local rootfs=$1 image=$2; shift 2
  local archive="$work/$(basename "$rootfs").tar"
  tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$archive" .
  local digest
  digest=$(sha256sum "$archive" | cut -d' ' -f1)
  if [ "$(docker image inspect -f '{{index .Config.Labels "switchboard.rootfs"}}' "$image" 2>/dev/null)" = "$digest" ]; then
    return
  fi
  local changes=(--change "LABEL switchboard.rootfs=$digest")
  local c
  for c in "$@"; do changes+=(--change "$c"); done
  docker import "${changes[@]}" "$archive" "$image" >/dev/null
}

# Downloads Debian packages into target/deploy/debs and unpacks them into
# target/deploy/pkgroot (the package index is refreshed once if needed).
fetch_debs() {
  mkdir -p "$work/debs" "$work/pkgroot"
  (
    cd "$work/debs"
    if ! apt-get download "$@" >/dev/null 2>&1; then
      echo "== apt-get update (package index missing or stale)"
      apt-get update -qq
      apt-get download "$@" >/dev/null
    fi
  )
  local pkg deb
  for pkg in "$@"; do
    deb=$(ls -t "$work/debs/${pkg}"_*.deb | head -n1)
    dpkg-deb -x "$deb" "$work/pkgroot"
  done
}

pkg_libs="$work/pkgroot/usr/lib/x86_64-linux-gnu:$work/pkgroot/lib/x86_64-linux-gnu"

# --- switchboard ---
if [ -z "$binary" ]; then
  echo "== cargo build --release"
  cargo build --release --locked -p switchboard
  binary="$root/target/release/switchboard"
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

rootfs="$work/switchboard-base"
rm -rf "$rootfs" && mkdir -p "$rootfs"
base_files "$rootfs"
copy_with_libs "$rootfs" "$binary"
# The binary itself is added by Dockerfile.local, as ./Dockerfile adds it.
import_rootfs "$rootfs" switchboard-base:local
echo "== switchboard-base:local"

context="$work/switchboard-context"
rm -rf "$context" && mkdir -p "$context"
cp deploy/image/Dockerfile.local "$context/Dockerfile"
# The (empty) data directory the image gives the nonroot user.
mkdir -p "$context/data"
# As ./Dockerfile does: debug info out (symbols stay, so backtraces still
# name functions), for a small image.
objcopy --strip-debug "$binary" "$context/switchboard"
previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
docker build -q -t "$tag" "$context" >/dev/null
# Rebuilding a tag leaves the old image behind, nameless: remove it
# (unless a container still uses it).
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
echo "== $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}'))"

# --- haproxy, prometheus: built once ---
if ! docker image inspect switchboard-haproxy:local >/dev/null 2>&1; then
  fetch_debs haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1
  rootfs="$work/haproxy-root"
  rm -rf "$rootfs" && mkdir -p "$rootfs/usr/sbin"
  base_files "$rootfs"
  echo "haproxy:x:99:99:haproxy:/var/lib/haproxy:/sbin/nologin" >>"$rootfs/etc/passwd"
  echo "haproxy:x:99:" >>"$rootfs/etc/group"
  cp "$work/pkgroot/usr/sbin/haproxy" "$rootfs/usr/sbin/haproxy"
  LD_LIBRARY_PATH="$pkg_libs" copy_with_libs "$rootfs" "$work/pkgroot/usr/sbin/haproxy"
  # As the official image: user haproxy (99), haproxy on PATH.
  import_rootfs "$rootfs" switchboard-haproxy:local \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'USER 99:99' 'EXPOSE 8000' \
    'ENTRYPOINT ["haproxy", "-W", "-db"]' 'CMD ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
  echo "== switchboard-haproxy:local"
fi

if ! docker image inspect switchboard-prometheus:local >/dev/null 2>&1; then
  fetch_debs prometheus
  rootfs="$work/prometheus-root"
  rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/etc/prometheus" "$rootfs/prometheus"
  base_files "$rootfs"
  # The official image's data directory belongs to nobody; world-writable
  # does the same without needing root to chown.
  chmod 1777 "$rootfs/prometheus"
  cp "$work/pkgroot/usr/bin/prometheus" "$rootfs/bin/prometheus"
  copy_with_libs "$rootfs" "$work/pkgroot/usr/bin/prometheus"
  # As prom/prometheus: user nobody, /bin/prometheus, /etc/prometheus, /prometheus.
  import_rootfs "$rootfs" switchboard-prometheus:local \
    'USER 65534:65534' 'EXPOSE 9090' 'WORKDIR /prometheus' \
    'ENTRYPOINT ["/bin/prometheus"]' \
    'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
  echo "== switchboard-prometheus:local"
fi

echo "== images ready in $((SECONDS - started)) s"

#!/usr/bin/env bash
# Builds a real kube-apiserver and kube-controller-manager for the e2e tier and prints the folder
# that holds them. No prebuilt Kubernetes server is reachable from these machines, but Debian
# bookworm's `kubernetes` source package (1.20.2, vendor/ included) builds with Debian's Go.
#
# The binaries are cached per machine, keyed by this script's digest, so only the first run pays
# (about five minutes and 1.2 GB of Go build cache on two cores). Progress goes to stderr; the
# only line on stdout is the folder.
#
#   CASCADE_E2E_CACHE   where builds are kept (default /var/cache/cascade-e2e)
set -euo pipefail

VERSION="1.20.5+really1.20.2-1.1+deb12u1"
ORIG_SHA256="b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc"
GIT_VERSION="v1.20.2"

here="$(cd "$(dirname "$0")" && pwd)"
digest="$(sha256sum "$here/build.sh" | cut -c1-16)"
cache="${CASCADE_E2E_CACHE:-/var/cache/cascade-e2e}"
out="$cache/kube-$digest"
log() { echo "control plane: $*" >&2; }

# One build at a time per machine: a second caller (CI starts the build early, then `make e2e`
# asks for it) waits here and then finds the binaries.
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9

if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" ]]; then
  echo "$out"
  exit 0
fi

need=()
command -v go >/dev/null || need+=(golang-go)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
if ((${#need[@]})); then
  log "installing ${need[*]} from Debian"
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

work="$cache/work-$digest"
rm -rf "$work"
mkdir -p "$work/lists/partial"
trap 'rm -rf "$work"' EXIT

# A private source list and state folder: the machine's own apt configuration is left untouched.
cat >"$work/sources.list" <<'EOF'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOF
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists")
log "fetching Debian's kubernetes $VERSION source"
(cd "$work" && apt-get "${apt_opts[@]}" update -qq >&2 &&
  apt-get "${apt_opts[@]}" source --download-only "kubernetes=$VERSION" >&2 2>/dev/null)
orig="$work/kubernetes_1.20.5+really1.20.2.orig.tar.gz"
echo "$ORIG_SHA256  $orig" | sha256sum --check --quiet

gopath="$work/gopath"
src="$gopath/src/k8s.io/kubernetes"
mkdir -p "$src"
tar -xzf "$orig" -C "$src" --strip-components=1

log "patching vendored reflect2 (Go >= 1.18 map iterator) and the zero-value type check"
python3 - "$src" <<'PY'
import pathlib
import sys

root = pathlib.Path(sys.argv[1]) / "vendor"


def patch(path: pathlib.Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise SystemExit(f"patch target not found in {path}: {old[:60]!r}")
    path.write_text(text.replace(old, new, 1))


# reflect2 1.0.1 links reflect.mapiterinit with the pre-1.18 signature and a truncated hiter;
# Go 1.19 writes the whole iterator into the caller's memory, so the server segfaults on the first
# custom-resource write. reflect2 1.0.2 passes a full hiter in.
reflect2 = root / "github.com/modern-go/reflect2"
patch(
    reflect2 / "unsafe_link.go",
    "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter",
    "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)",
)
patch(
    reflect2 / "unsafe_link.go",
    "\t// rest fields are ignored\n",
    "\tt           unsafe.Pointer\n\th           unsafe.Pointer\n\tbuckets     unsafe.Pointer\n"
    "\tbptr        unsafe.Pointer\n\toverflow    *[]unsafe.Pointer\n"
    "\toldoverflow *[]unsafe.Pointer\n\tstartBucket uintptr\n\toffset      uint8\n"
    "\twrapped     bool\n\tB           uint8\n\ti           uint8\n\tbucket      uintptr\n"
    "\tcheckBucket uintptr\n",
)
patch(
    reflect2 / "unsafe_map.go",
    "\treturn &UnsafeMapIterator{\n\t\thiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),",
    "\tvar it hiter\n\tmapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)\n"
    "\treturn &UnsafeMapIterator{\n\t\thiter:      &it,",
)

# kube-openapi#230 (kubernetes#99804): a zero value ("", 0, false) was taken for null, so every
# CRD with `default: ""` was refused.
zero = (
    "if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {"
)
for rel in ("k8s.io/kube-openapi/pkg/validation/validate/type.go", "github.com/go-openapi/validate/type.go"):
    patch(root / rel, zero, "if data == nil {")
PY

export GOPATH="$gopath" GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS=
export GOCACHE="$cache/gocache"
cd "$src"

log "generating pkg/generated/openapi (openapi-gen over the tagged packages)"
go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
dirs="$(find -H . \( -path ./vendor -o -path './_*' -o -path './.*' \) -prune -o \
  -name '*.go' -print | xargs grep -l '^// *+k8s:openapi-gen=' |
  xargs -n1 dirname | sed -e 's|^\./staging/src/|vendor/|' -e 's|^\./||' | LC_ALL=C sort -u |
  grep -v -e '^vendor/k8s.io/code-generator' -e '^vendor/k8s.io/sample-apiserver' |
  sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)"
"$work/openapi-gen" -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$work/violations.report" \
  --logtostderr >&2 2>/dev/null

pkg=k8s.io/kubernetes/vendor/k8s.io
ldflags=""
for kv in "gitVersion=$GIT_VERSION" gitMajor=1 gitMinor=20 gitTreeState=clean \
  "buildDate=1970-01-01T00:00:00Z"; do
  ldflags+=" -X $pkg/client-go/pkg/version.$kv -X $pkg/component-base/version.$kv"
done
mkdir -p "$out.tmp"
for cmd in kube-apiserver kube-controller-manager; do
  log "building $cmd (several minutes on two cores)"
  go build -tags providerless -ldflags "-s -w$ldflags" -o "$out.tmp/$cmd" "./cmd/$cmd"
done
rm -rf "$out"
mv "$out.tmp" "$out"
log "built $("$out/kube-apiserver" --version)"
echo "$out"

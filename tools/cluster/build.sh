#!/usr/bin/env bash
# Builds the pinned control plane (kube-apiserver, kube-controller-manager, etcd)
# from Go modules, once, into a cache outside the repository. A second call with
# the binaries present returns at once. Prints the cache's bin directory last.
#
# Usage: build.sh [--real-node]   (--real-node: also kubelet and kube-scheduler, from
# the same modules, for the real node of `make cluster-real`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod")
etcd_version=$(sed -n 's/^\tgo.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\)$/\1/p' "$here/go.mod")
cache=${SCHEDULEDBOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scheduledbot}
bin=$cache/k8s-$version/bin
mkdir -p "$bin"
# Several checkouts share the cache: one build at a time, the others wait and reuse it.
exec 9>"$cache/.build.lock"
flock 9

minor=$(echo "$version" | cut -d. -f2)
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
cd "$here"
build() { # name package [ldflags]
  local name=$1 pkg=$2 flags=${3:-"-s -w"}
  if [ -x "$bin/$name" ]; then return; fi
  local start=$SECONDS
  echo ">> building $name ($pkg); a cold build takes minutes on 2 cores" >&2
  # -v lists each package as it compiles: the progress of a long cold build.
  go build -v -trimpath -ldflags "$flags" -o "$bin/$name.tmp" "$pkg" 2>&1 \
    | awk '{n++; if (n % 50 == 0) { printf "   %d packages compiled, at %s\n", n, $0; fflush() } }' >&2
  mv "$bin/$name.tmp" "$bin/$name"
  echo ">> $name built in $((SECONDS - start)) s" >&2
}
build etcd go.etcd.io/etcd/server/v3 "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
if [ "${1:-}" = --real-node ]; then
  build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldflags"
  build kubelet k8s.io/kubernetes/cmd/kubelet "$ldflags"
fi
echo "$bin"

#!/usr/bin/env bash
# Build deploy/Dockerfile with buildah and no network inside the build, the way tests/test_deploy_image.py does:
#   deploy/build-offline.sh base     # debootstrap Debian bookworm (python3, venv) and import it as BASE_IMAGE
#   deploy/build-offline.sh wheels   # pip wheel torch + intraday's dependencies into deploy/wheels/
#   deploy/build-offline.sh build    # buildah bud --network none ... -t IMAGE (installs with --no-index)
#   deploy/build-offline.sh prepare  # base + wheels (the steps that need the network; .ci/run calls it)
# `base` and `wheels` reach the network (Debian mirror, package index); `build` does not.
# Environment: BASE_IMAGE (localhost/intraday-base:bookworm), IMAGE (localhost/intraday:test), TORCH_SPEC
# (torch==2.13.0), TORCH_INDEX_URL (extra index for the CPU torch wheel, e.g. https://download.pytorch.org/whl/cpu),
# DEBIAN_MIRROR (http://deb.debian.org/debian), PYTHON (python3; its version must be the base's, PY_VERSION=3.11),
# RUNTIME (runc: crun refuses hybrid cgroup hierarchies).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=${BASE_IMAGE:-localhost/intraday-base:bookworm}
IMAGE=${IMAGE:-localhost/intraday:test}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}

base() {
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then echo "base: $BASE_IMAGE exists"; return; fi
  local dir; dir=$(mktemp -d /tmp/intraday-rootfs.XXXXXX)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir/rootfs" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$dir/debootstrap.log" 2>&1 \
    || { tail -20 "$dir/debootstrap.log"; exit 1; }
  rm -rf "$dir/rootfs/var/cache/apt/archives/"*.deb "$dir/rootfs/var/lib/apt/lists/"*
  tar --numeric-owner -C "$dir/rootfs" -cf "$dir/rootfs.tar" .
  local ctr; ctr=$(buildah from scratch)
  buildah add "$ctr" "$dir/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
  buildah commit --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -rf "$dir"
  echo "base: $BASE_IMAGE imported from a debootstrap of bookworm"
}

wheels() {
  local want=${PY_VERSION:-3.11} have
  have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$have" != "$want" ]; then
    echo "wheels: $PYTHON is Python $have but the base image's is $want (set PYTHON or PY_VERSION)" >&2; exit 1
  fi
  mkdir -p deploy/wheels
  # the image's Python is the base's (3.11 on bookworm): wheels are built by a Python of the same version
  "$PYTHON" -m pip wheel -q --wheel-dir deploy/wheels ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
    "$TORCH_SPEC" "setuptools>=77" .
  rm -f deploy/wheels/intraday-*.whl  # the build installs the package from its source, not from a stale wheel
  echo "wheels: $(ls deploy/wheels/*.whl | wc -l) in deploy/wheels ($(du -sh deploy/wheels | cut -f1))"
}

build() {
  buildah bud --network none --runtime "${RUNTIME:-runc}" --format docker --layers --build-arg BASE="$BASE_IMAGE" --build-arg PIP_OFFLINE=1 \
    --build-arg TORCH_SPEC="$TORCH_SPEC" -f deploy/Dockerfile -t "$IMAGE" .
}

case "${1:-}" in
  base) base ;;
  wheels) wheels ;;
  build) build ;;
  prepare) base; wheels ;;
  *) echo "usage: $0 base|wheels|build|prepare" >&2; exit 2 ;;
esac

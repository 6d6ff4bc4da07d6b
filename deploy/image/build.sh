#!/usr/bin/env bash
# Build the p2p-fetch image with buildah, with no network inside the build.
#
#   deploy/image/build.sh            # what `make image` runs
#
# Settings, from the environment:
#   IMAGE          tag of the result [localhost/p2p-fetch:VERSION]
#   BASE           base image with Python 3.11+; empty builds a Debian base
#                  with debootstrap (needs root) [empty]
#   DEBIAN_SUITE   Debian release of that base; its python3 must have the
#                  minor version of PYTHON [bookworm]
#   DEBIAN_MIRROR  Debian archive debootstrap downloads from [http://deb.debian.org/debian]
#   PYTHON         Python that prepares the wheels [.venv/bin/python]
#
# Everything it prepares is cached under build/image (ignored by git): the
# base's root file system as a tar file, and the wheels of every dependency.
# Delete that folder to start over.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=${BASE:-}
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=${IMAGE:-localhost/p2p-fetch:$VERSION}

BUILD_DIR=build/image
WHEELS=$BUILD_DIR/wheels
ROOTFS_TAR=$BUILD_DIR/base-$DEBIAN_SUITE.tar
LOCAL_BASE=localhost/p2p-fetch-base:$DEBIAN_SUITE
# The label that records which root file system tar a local base came from.
ROOTFS_LABEL=org.p2p-fetch.base-rootfs

NETNS=""
RUN=()

fail() {
    echo "build.sh: $*" >&2
    exit 1
}

log() {
    echo "build.sh: $*" >&2
}

# Run buildah in a network namespace with loopback alone, so that nothing in
# the build can reach a registry or a package index; root only.
enter_netns() {
    NETNS=p2p-image-$$
    ip netns add "$NETNS"
    trap 'ip netns delete "$NETNS"' EXIT
    # Exiting on these signals runs the EXIT trap, which bash would skip.
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ip -n "$NETNS" link set lo up
    RUN=(nsenter "--net=/run/netns/$NETNS")
}

# The base's root file system, made once with debootstrap and kept as a tar file.
make_rootfs_tar() {
    if [[ -f $ROOTFS_TAR ]]; then
        return
    fi
    command -v debootstrap >/dev/null || fail "debootstrap is not installed (Debian package debootstrap); or set BASE to an image with Python 3.11"
    [[ $(id -u) == 0 ]] || fail "debootstrap needs root; run as root or set BASE to an image with Python 3.11"

    local rootfs=$BUILD_DIR/rootfs-$DEBIAN_SUITE
    rm -rf "$rootfs"
    mkdir -p "$BUILD_DIR"
    log "debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR into $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
        >"$BUILD_DIR/debootstrap.log" 2>&1 || fail "debootstrap failed; see $BUILD_DIR/debootstrap.log"

    # The package cache and lists only make the image larger.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$rootfs"
}

# Import the tar file as LOCAL_BASE, unless the image made from this very
# file is there already.
import_base() {
    local digest current container previous
    digest=sha256:$(sha256sum "$ROOTFS_TAR" | cut -d' ' -f1)
    current=$("${RUN[@]}" buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$ROOTFS_LABEL\"}}" "$LOCAL_BASE" 2>/dev/null || true)
    if [[ $current == "$digest" ]]; then
        return
    fi

    log "importing $ROOTFS_TAR as $LOCAL_BASE"
    previous=$("${RUN[@]}" buildah inspect --type image --format '{{.FromImageID}}' "$LOCAL_BASE" 2>/dev/null || true)
    container=$("${RUN[@]}" buildah from scratch)
    "${RUN[@]}" buildah add --quiet "$container" "$ROOTFS_TAR" / >/dev/null
    "${RUN[@]}" buildah config --label "$ROOTFS_LABEL=$digest" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash "$container"
    "${RUN[@]}" buildah commit --quiet --rm "$container" "$LOCAL_BASE" >/dev/null
    if [[ -n $previous ]]; then
        "${RUN[@]}" buildah rmi "$previous" >/dev/null 2>&1 || log "the previous $LOCAL_BASE ($previous) is still in use, so it is kept"
    fi
}

# Print the MAJOR.MINOR version of the base's python3.
base_python_version() {
    local container version
    container=$("${RUN[@]}" buildah from --quiet "${PULL[@]}" "$BASE")
    version=$("${RUN[@]}" buildah run --network none "$container" -- \
        python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') || version=""
    "${RUN[@]}" buildah rm "$container" >/dev/null
    [[ -n $version ]] || fail "base image $BASE has no working python3"
    echo "$version"
}

# The wheels of every dependency and of the build backend, made on this host
# with PYTHON; redone only when those requirements or PYTHON's version change.
prepare_wheels() {
    local requirements inputs
    requirements=$("$PYTHON" -c '
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))')
    inputs="$("$PYTHON" -c 'import sys; print(sys.version)') $(sha256sum <<<"$requirements")"
    if [[ -f $WHEELS/.inputs && $(cat "$WHEELS/.inputs") == "$inputs" ]]; then
        return
    fi

    log "preparing wheels in $WHEELS"
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELS" --requirement /dev/stdin <<<"$requirements"
    echo "$inputs" >"$WHEELS/.inputs"
}

if [[ -z $BASE ]]; then
    make_rootfs_tar
    [[ $(id -u) == 0 ]] && command -v ip >/dev/null && enter_netns
    BASE=$LOCAL_BASE
    PULL=(--pull=never)
    import_base
else
    # A site's own base may have to be pulled from its registry.
    PULL=()
fi

python_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
base_version=$(base_python_version)
[[ $python_version == "$base_version" ]] || fail "the base's python3 is $base_version but $PYTHON is $python_version; \
the wheels must match the base: set PYTHON to a python$base_version, or DEBIAN_SUITE or BASE to one with Python $python_version"
prepare_wheels

# Without --layers buildah keeps no image of the first stage, and the image
# that IMAGE named before is removed once the new one has the tag, so repeated
# builds do not pile up in the local storage.
previous=$("${RUN[@]}" buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
log "building $IMAGE from $BASE"
"${RUN[@]}" buildah bud --quiet --format docker --network none "${PULL[@]}" \
    --build-arg "BASE=$BASE" --build-arg PIP_NO_INDEX=1 --tag "$IMAGE" . >/dev/null
current=$("${RUN[@]}" buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE")
if [[ -n $previous && $previous != "$current" ]]; then
    "${RUN[@]}" buildah rmi "$previous" >/dev/null 2>&1 || log "the previous $IMAGE ($previous) is still in use, so it is kept"
fi
log "built $IMAGE"

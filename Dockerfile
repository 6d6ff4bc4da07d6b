# One image for p2p-tracker, p2p-seeder, p2p-mirror and p2p-fetch.
#
# BASE is any Debian-like image whose `python3` is 3.11 or newer with the
# venv module; a site with its own registry mirror points it there. `make
# image` builds a Debian bookworm base with debootstrap instead, and prepares
# the wheels of every dependency on the host in build/image/wheels, so that
# the build itself needs no network:
#
#   make image
#   buildah bud --network none --build-arg BASE=... --build-arg PIP_NO_INDEX=1 .
#
# Without prepared wheels, the first stage downloads them from the package
# index that pip is configured for.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# Stage 1: build the wheel of the project and install it with its
# dependencies into a virtual environment, which is all the runtime copies.
FROM ${BASE} AS wheels

# 1 keeps pip off the network: it then takes only the prepared wheels.
ARG PIP_NO_INDEX=0
ENV PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# .dockerignore lets only the sources and build/image/wheels through.
COPY . /src

# pip skips a --find-links folder that does not exist, so the same command
# works with and without prepared wheels.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --wheel-dir /wheels --find-links /src/build/image/wheels /src \
    && python3 -m venv /opt/p2p-fetch \
    && /opt/p2p-fetch/bin/pip install --no-index --find-links /wheels p2p-fetch \
    && /opt/p2p-fetch/bin/pip uninstall --yes pip

# Stage 2: the runtime, the base plus the virtual environment.
FROM ${BASE}

LABEL org.opencontainers.image.title="p2p-fetch" \
      org.opencontainers.image.description="Peer-to-peer distribution of files and container image layers over BitTorrent"

# A fixed UID and GID, so that Kubernetes manifests can run as the same user
# (runAsUser) and own host directories (fsGroup, chown) without looking it up.
ARG P2P_UID=10001
RUN groupadd --gid ${P2P_UID} p2p \
    && useradd --uid ${P2P_UID} --gid p2p --home-dir /var/lib/p2p-fetch --no-create-home \
       --shell /usr/sbin/nologin p2p \
    && mkdir -p /var/lib/p2p-fetch \
    && chown p2p:p2p /var/lib/p2p-fetch

COPY --from=wheels /opt/p2p-fetch /opt/p2p-fetch

# The data folders are left to --data-dir, because a P2P_*_DATA_DIR variable
# here would silently beat the data_dir of a --config file. HOME is the
# volume, so the seeder's and the mirror's default cache folders are in it too.
ENV PATH=/opt/p2p-fetch/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    P2P_HEALTHCHECK_URL=http://127.0.0.1:6969/healthz

USER ${P2P_UID}:${P2P_UID}
WORKDIR /var/lib/p2p-fetch
VOLUME ["/var/lib/p2p-fetch"]

# tracker HTTP (announce, scrape, task API), seeder API, mirror and local
# fetch API, BitTorrent peer connections (TCP; uTP is off).
EXPOSE 6969/tcp 7000/tcp 65001/tcp 6881/tcp

# The image runs any of the servers, so the URL to probe is a variable: set
# P2P_HEALTHCHECK_URL to http://127.0.0.1:7000/healthz for a seeder and to
# http://127.0.0.1:65001/healthz for a mirror. OCI images drop HEALTHCHECK, so
# buildah and podman need `--format docker` to keep it. The empty ProxyHandler
# keeps an HTTP_PROXY of the container away from the loopback probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open(os.environ['P2P_HEALTHCHECK_URL'], timeout=4)"]

CMD ["p2p-tracker", "--listen", "0.0.0.0:6969", "--data-dir", "/var/lib/p2p-fetch/tracker"]

# Sidecar image of argocd-secrets-plugin, an Argo CD Config Management Plugin (CMP).
#
#   docker build -t registry.example.com/argocd-secrets-plugin:0.1.0 .
#   docker build --build-arg HELM_MAJOR=4 -t registry.example.com/argocd-secrets-plugin:0.1.0-helm4 .
#
# The image holds Python, the plugin (`plugin`, a launcher written over pip's console script),
# helm and kustomize, and the plugin configuration at
# /home/argocd/cmp-server/config/plugin.yaml. It has no ENTRYPOINT or
# CMD of its own: the install manifests start the sidecar with
# `command: [plugin, serve, --exec, /var/run/argocd/argocd-cmp-server]` (the zygote, then
# argocd-cmp-server, a binary that the repo-server pod copies into the shared `var-files`
# volume, in its place; `[/var/run/argocd/argocd-cmp-server]` alone works too, without zygote).
#
# Runtime layout (see docs/installation.md; every writable path is meant to be an emptyDir, so
# the container runs with readOnlyRootFilesystem, as UID 999 like Argo CD's own containers):
#   /tmp                   cmp-server work dir (/tmp/_cmp_server) and render scratch space
#   /home/plugin           HOME, Helm config and data (emptyDir `plugin-home`)
#   /home/plugin/.cache    Helm cache, chart cache, Vault token cache, and the zygote's socket
#                          (argocd-secrets-plugin/serve/serve.sock, 0700 directory; emptyDir
#                          `plugin-cache`)
#
# Supply chain: the base image is pinned to an exact tag (pin it by digest in your own
# registry); helm and kustomize are pinned by version AND SHA-256 and the build fails closed on
# a mismatch or a missing checksum; Python dependencies are installed from
# requirements/image.txt with --require-hashes; the plugin itself is a wheel built from this
# source tree. Nothing in the final stage comes from a network.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --------------------------------------------------------------------------------------------
# tools: download and verify helm and kustomize (linux/amd64 checksums are pinned below; for
# another architecture pass the matching checksums, otherwise the build stops).
# --------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS tools

ARG TARGETARCH=amd64
# 3 (default) or 4: which of the two pinned Helm releases goes into the image.
ARG HELM_MAJOR=3
ARG HELM3_VERSION=3.17.3
ARG HELM4_VERSION=4.3.1
# SHA-256 of the `helm` binary inside the official linux-amd64 release archive, computed from
# that same official binary (not of the .tar.gz). Checked after unpacking, before use.
ARG HELM3_SHA256=c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3
ARG HELM4_SHA256=b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd
# Optional: SHA-256 of the release .tar.gz (the `.sha256sum` file published next to it); when
# set, the archive is also checked before it is unpacked.
ARG HELM_ARCHIVE_SHA256=
ARG KUSTOMIZE_VERSION=5.7.1
# SHA-256 of kustomize_v5.7.1_linux_amd64.tar.gz as published in the release's checksums.txt.
# Required: an empty value stops the build (see docs/installation.md, "Building the image").
ARG KUSTOMIZE_SHA256=ea375e7372f9aa029129d4b2d16c66b7750b7f1213c4f66f910d981c895818d8

SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# Build stage only (never in the final image), so Debian's current curl is fine.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /work

RUN case "${HELM_MAJOR}" in \
        3) version="${HELM3_VERSION}"; binary_sha256="${HELM3_SHA256}" ;; \
        4) version="${HELM4_VERSION}"; binary_sha256="${HELM4_SHA256}" ;; \
        *) echo "HELM_MAJOR must be 3 or 4, got '${HELM_MAJOR}'" >&2; exit 1 ;; \
    esac; \
    if [ -z "${binary_sha256}" ]; then \
        echo "no SHA-256 pinned for the helm ${version} binary: refusing to build" >&2; exit 1; \
    fi; \
    archive="helm-v${version}-linux-${TARGETARCH}.tar.gz"; \
    curl -fsSL --proto '=https' --tlsv1.2 -o "${archive}" "https://get.helm.sh/${archive}"; \
    if [ -n "${HELM_ARCHIVE_SHA256}" ]; then \
        echo "${HELM_ARCHIVE_SHA256}  ${archive}" | sha256sum -c -; \
    fi; \
    mkdir helm-unpacked; \
    tar -xzf "${archive}" -C helm-unpacked --no-same-owner "linux-${TARGETARCH}/helm"; \
    install -m 0755 "helm-unpacked/linux-${TARGETARCH}/helm" /work/helm; \
    echo "${binary_sha256}  /work/helm" | sha256sum -c -; \
    /work/helm version --short

RUN if [ -z "${KUSTOMIZE_SHA256}" ]; then \
        echo "KUSTOMIZE_SHA256 is empty: pass the published SHA-256 of" \
             "kustomize_v${KUSTOMIZE_VERSION}_linux_${TARGETARCH}.tar.gz with" \
             "--build-arg KUSTOMIZE_SHA256=... (docs/installation.md)" >&2; \
        exit 1; \
    fi; \
    archive="kustomize_v${KUSTOMIZE_VERSION}_linux_${TARGETARCH}.tar.gz"; \
    curl -fsSL --proto '=https' --tlsv1.2 -o "${archive}" \
        "https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2Fv${KUSTOMIZE_VERSION}/${archive}"; \
    echo "${KUSTOMIZE_SHA256}  ${archive}" | sha256sum -c -; \
    mkdir kustomize-unpacked; \
    tar -xzf "${archive}" -C kustomize-unpacked --no-same-owner kustomize; \
    install -m 0755 kustomize-unpacked/kustomize /work/kustomize; \
    /work/kustomize version

# --------------------------------------------------------------------------------------------
# wheels: the plugin as a wheel built from this source tree, plus its dependencies as
# hash-checked binary wheels (no compiler is needed anywhere).
# --------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheels

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/image.txt requirements/image.txt
RUN python -m pip download --require-hashes --only-binary=:all: --no-deps \
        -r requirements/image.txt -d /wheels
COPY pyproject.toml README.md ./
COPY plugin ./plugin
RUN python -m pip wheel --no-deps . -w /wheels

# --------------------------------------------------------------------------------------------
# final: Python + plugin + helm + kustomize; no compiler, no package cache, no build files.
# --------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="argocd-secrets-plugin" \
      org.opencontainers.image.description="Argo CD CMP sidecar: Helm/Kustomize/plain/Jinja2 rendering with Vault/OpenBao placeholders" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# UID/GID 999 is the `argocd` user of Argo CD's own image: the repo-server (999) must be able
# to connect to the socket the cmp-server creates in the shared `plugins` volume.
RUN groupadd --system --gid 999 argocd \
    && useradd --system --uid 999 --gid 999 --home-dir /home/plugin --no-create-home \
        --shell /usr/sbin/nologin argocd \
    && install -d -o 999 -g 999 -m 0700 /home/plugin /home/plugin/.cache \
    && install -d -m 0755 /home/argocd /home/argocd/cmp-server /home/argocd/cmp-server/config \
    && install -d -o 999 -g 999 -m 0755 /home/argocd/cmp-server/plugins

COPY --from=tools /work/helm /work/kustomize /usr/local/bin/
# The launcher replaces the console script pip wrote at /usr/local/bin/plugin: the same entry
# point, started as `python -IS` with the install paths written in (no `site`, no `import re`:
# about 20 ms less per render, and no PYTHON* variable, user site or working directory can
# change what it imports; see plugin/serve/launcher.py and docs/performance.md).
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels \
        --disable-pip-version-check /wheels/argocd_secrets_plugin-*.whl \
    && python -I -m plugin.serve.launcher /usr/local/bin/plugin

COPY cmp-config/plugin.yaml /home/argocd/cmp-server/config/plugin.yaml

# Every path the plugin, Helm or the token cache writes to is under /tmp or /home/plugin
# (emptyDirs in the manifests); nothing is written to the image at run time.
# AVP_TOKEN_CACHE_DIR is a directory name, not a credential.
# hadolint ignore=DL3064
ENV HOME=/home/plugin \
    XDG_CACHE_HOME=/home/plugin/.cache \
    XDG_CONFIG_HOME=/home/plugin/.config \
    XDG_DATA_HOME=/home/plugin/.local/share \
    HELM_CACHE_HOME=/home/plugin/.cache/helm \
    HELM_CONFIG_HOME=/home/plugin/.config/helm \
    HELM_DATA_HOME=/home/plugin/.local/share/helm \
    PLUGIN_CACHE_DIR=/home/plugin/.cache/argocd-secrets-plugin \
    AVP_TOKEN_CACHE_DIR=/home/plugin/.cache/argocd-secrets-plugin/vault-tokens \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /home/plugin
USER 999:999

# Smoke test as the runtime user: the three programs start, and `plugin` renders a Jinja2
# template with one placeholder read from the file backend (in-process: no zygote runs at
# build time). `plugin version` imports no library; this render needs PyYAML, Jinja2 and
# MarkupSafe, so it proves that the launcher (`python -IS`, its install paths written in) finds
# the installed dependencies. Its files live in a temporary directory removed at the end.
RUN plugin version && helm version --short && kustomize version \
    && smoke="$(mktemp -d)" && mkdir "${smoke}/app" \
    && printf 'kv/data/smoke:\n  value: rendered\n' > "${smoke}/secrets.yaml" \
    && printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' \
        '  name: {{ "SMOKE" | lower }}' 'data:' '  value: <path:kv/data/smoke#value>' \
        > "${smoke}/app/smoke.yaml.j2" \
    && AVP_TYPE=file AVP_FILE_PATH="${smoke}/secrets.yaml" \
        plugin generate "${smoke}/app" > "${smoke}/out.yaml" \
    && grep -qx '  name: smoke' "${smoke}/out.yaml" \
    && grep -qx '  value: rendered' "${smoke}/out.yaml" \
    && rm -rf "${smoke}"

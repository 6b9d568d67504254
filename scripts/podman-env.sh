# podman-env.sh — sourced by the scripts and tests that run podman: a containers.conf for this
# kind of machine (a VM whose cgroups are mounted in hybrid mode, which crun refuses, and whose
# hard limits are lower than podman's default ones). Sets CONTAINERS_CONF unless it is set.
if [ -z "${CONTAINERS_CONF:-}" ]; then
    conf="$HOME/.cache/synod/containers.conf"
    mkdir -p "$HOME/.cache/synod"
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=65536
    [ "$nofile" -gt 65536 ] && nofile=65536
    {
        echo "[containers]"
        echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=4096:4096\"]"
        if command -v runc >/dev/null 2>&1; then
            echo "[engine]"
            echo "runtime = \"runc\""
        fi
    } > "$conf"
    export CONTAINERS_CONF="$conf"
fi

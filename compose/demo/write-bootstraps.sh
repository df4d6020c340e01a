#!/bin/sh
# One-shot init: write one Envoy bootstrap per argument into $BOOTSTRAP_DIR, each made by `xds bootstrap`.
#
#   write-bootstraps.sh FILE:NODE_ID:NODE_CLUSTER ...
#
# node.cluster is the node group: it picks which listeners of the KV policies the Envoy receives (their
# `groups:`). Environment: BOOTSTRAP_DIR, BOOTSTRAP_XDS_ADDRESS (where the control plane's ADS listens, a
# compose DNS name, hence a STRICT_DNS xds_cluster), BOOTSTRAP_ADMIN_ADDRESS (each Envoy's own admin).
# tests/unit/test_compose.py runs this script with the arguments from docker-compose.yml and validates
# every file it writes with `envoy --mode validate`.
set -eu

: "${BOOTSTRAP_DIR:?}" "${BOOTSTRAP_XDS_ADDRESS:?}" "${BOOTSTRAP_ADMIN_ADDRESS:?}"
[ "$#" -gt 0 ] || { echo "usage: $0 FILE:NODE_ID:NODE_CLUSTER ..." >&2; exit 2; }

for spec in "$@"; do
    file=${spec%%:*}
    rest=${spec#*:}
    node_id=${rest%%:*}
    cluster=${rest#*:}
    case "$spec" in *:*:*) ;; *) file= ;; esac
    case "$file" in */*) file= ;; esac
    [ -n "$file" ] && [ -n "$node_id" ] && [ -n "$cluster" ] || {
        echo "xds-init: bad spec '$spec': expected FILE:NODE_ID:NODE_CLUSTER, FILE without '/'" >&2; exit 2; }
    # Written aside and renamed: an Envoy (re)starting meanwhile reads the old file or the new one, never
    # half of one.
    xds bootstrap --node-id "$node_id" --cluster "$cluster" --xds-address "$BOOTSTRAP_XDS_ADDRESS" \
        --admin-address "$BOOTSTRAP_ADMIN_ADDRESS" > "$BOOTSTRAP_DIR/.$file.tmp"
    chmod 0644 "$BOOTSTRAP_DIR/.$file.tmp"
    mv "$BOOTSTRAP_DIR/.$file.tmp" "$BOOTSTRAP_DIR/$file"
    echo "xds-init: wrote $BOOTSTRAP_DIR/$file (node $node_id, group $cluster, ADS at $BOOTSTRAP_XDS_ADDRESS)"
done

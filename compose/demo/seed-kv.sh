#!/bin/sh
# One-shot init: write the demo's policy documents into Consul KV, each only if its key is still absent.
#
#   seed-kv.sh KEY=FILE ...     (FILE relative to the working directory, /policies)
#
# "Only if absent" keeps a canary shift an operator already made: this runs again on every
# `docker compose up`, and Consul may still hold the newer weights. Runs in the Consul image (the `consul`
# CLI, CONSUL_HTTP_ADDR pointing at the server).
set -eu

[ "$#" -gt 0 ] || { echo "usage: $0 KEY=FILE ..." >&2; exit 2; }
for spec in "$@"; do
    key=${spec%%=*}
    file=${spec#*=}
    [ -n "$key" ] && [ "$key" != "$spec" ] && [ -f "$file" ] || {
        echo "kv-init: bad spec '$spec': expected KEY=FILE with an existing FILE" >&2; exit 2; }
    if consul kv get "$key" > /dev/null 2>&1; then
        echo "kv-init: $key already set, kept (overwrite with: consul kv put $key @$file)"
    else
        consul kv put "$key" "@$file" > /dev/null
        echo "kv-init: $key <- $file"
    fi
done

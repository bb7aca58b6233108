#!/usr/bin/env bash
# Installs gantry's default pod network (10-gantry.conflist beside this
# script: bridge gantry0 on 10.89.0.0/16 with portmap) into the CNI config
# directory, only when that directory holds no network at all: an
# operator's own network is never overwritten, nor outranked by a file that
# sorts before it. Usage: deploy/cni-default.sh [CONF_DIR] (default
# /etc/cni/net.d, where gantry's default config looks).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-/etc/cni/net.d}
shopt -s nullglob
existing=("$dir"/*.conf "$dir"/*.conflist "$dir"/*.json)
if [ ${#existing[@]} -gt 0 ]; then
  echo "cni-default: $dir already has a network (${existing[0]}); left as it is"
  exit 0
fi
install -D -m 0644 "$here/10-gantry.conflist" "$dir/10-gantry.conflist"
echo "cni-default: installed gantry's default network as $dir/10-gantry.conflist"

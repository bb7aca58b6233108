#!/usr/bin/env bash
# Installs a release build of gantry with its default config, systemd unit,
# CNI network and crictl settings. Run from the repository root as root.
set -euo pipefail
cargo build --release --bins
install -D -m 0755 target/release/gantry /usr/local/bin/gantry
install -D -m 0755 target/release/gantry-monitor /usr/local/bin/gantry-monitor
install -D -m 0755 target/release/gantry-exec /usr/local/bin/gantry-exec
install -D -m 0644 deploy/gantry.yaml /etc/gantry/gantry.yaml
# The unit names the packaged binaries (/usr/bin); these go to /usr/local/bin.
sed 's#/usr/bin/gantry#/usr/local/bin/gantry#g' deploy/gantry.service >/etc/systemd/system/gantry.service
chmod 0644 /etc/systemd/system/gantry.service
deploy/cni-default.sh /etc/cni/net.d
[ -e /etc/crictl.yaml ] || install -D -m 0644 deploy/crictl.yaml /etc/crictl.yaml
systemctl daemon-reload 2>/dev/null || true
echo "installed; start with: systemctl enable --now gantry"

#!/usr/bin/env bash
# Sluice's main job on an embedded default: a lossless rolling update of 6 pods behind real
# HAProxy, drained and restored by Sluice, on a simulated cluster. Needs only the Rust
# toolchain; installs what the build and the demo need from Debian (protoc for the gRPC
# code, HAProxy) when it is missing. Arguments go to `sluice demo` (e.g. --no-sluice).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -d /usr/include/google/protobuf ] || need+=(libprotobuf-dev)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  echo "demo.sh: installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export PATH="$PATH:/usr/sbin"
# The first build takes several minutes on a fresh machine (cargo shows its progress);
# later runs start at once.
echo "demo.sh: building (release; the first build takes several minutes)…"
cargo build --release -p sluice-gateway --bin sluice
exec target/release/sluice demo "$@"

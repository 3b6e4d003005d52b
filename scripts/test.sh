#!/usr/bin/env bash
# Runs every check and test of the project on a fresh Debian machine that has only the
# Rust toolchain: installs the Debian packages the tests need (real HAProxy, …), then
# cargo fmt --check, cargo clippy -D warnings, and the whole test suite. No test skips: a
# test whose server or tool is missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have haproxy || need+=(haproxy)
have named || need+=(bind9)
have dig || need+=(bind9-dnsutils)
have pdns_server || need+=(pdns-server)
[ -f /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql ] || need+=(pdns-backend-sqlite3)
have sqlite3 || need+=(sqlite3)
have etcd || need+=(etcd-server)
have etcdctl || need+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
have java || need+=(default-jre-headless)
have kubectl || need+=(kubernetes-client)   # kubectl, an independent client of the simulator
have protoc || need+=(protobuf-compiler)  # gRPC code generation
[ -d /usr/include/google/protobuf ] || need+=(libprotobuf-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export PATH="$PATH:/usr/sbin"

# The example plugin in Python (examples/python-plugin) runs on grpcio from PyPI.
if ! python3 -c "import grpc, grpc_tools" >/dev/null 2>&1; then
  echo "test.sh: installing grpcio and grpcio-tools (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools 2>&1 | grep -v "Running pip as the 'root' user" || true
  python3 -c "import grpc, grpc_tools"
fi

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "test.sh: cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: every test binary runs, so one failure does not hide the rest.
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log" || status=1
exit "$status"

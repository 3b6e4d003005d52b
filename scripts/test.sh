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
have prometheus || need+=(prometheus)       # scrapes the gateway's /metrics in the tests
have wget || need+=(wget)                   # runs the documented preStop exec hook in the tests
have protoc || need+=(protobuf-compiler)  # gRPC code generation
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)  # the Python plugin's environment
[ -d /usr/include/google/protobuf ] || need+=(libprotobuf-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export PATH="$PATH:/usr/sbin"

# From PyPI, into a virtual environment of its own (a stock Debian refuses pip installs into
# the system Python, PEP 668): grpcio and grpcio-tools for the example plugin in Python
# (examples/python-plugin), kubernetes-validate to check deploy/ against the Kubernetes
# schemas offline. The tests find it through SLUICE_PYTHON.
venv="$PWD/target/python"
if ! "$venv/bin/python3" -c "import grpc, grpc_tools, kubernetes_validate" >/dev/null 2>&1; then
  echo "test.sh: making $venv with grpcio, grpcio-tools and kubernetes-validate (PyPI)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools kubernetes-validate
  "$venv/bin/python3" -c "import grpc, grpc_tools, kubernetes_validate"
fi
export SLUICE_PYTHON="$venv/bin/python3"

# The servers the tests run, as installed here (the READMEs name no versions of their own).
echo "test.sh: servers: $(haproxy -v | head -1 | cut -d' ' -f1-3);" \
  "BIND $(named -v | cut -d' ' -f2);" \
  "PowerDNS $(pdns_server --version 2>&1 | grep -o 'Authoritative Server [0-9.]*' | cut -d' ' -f3);" \
  "etcd $(etcd --version | head -1 | awk '{print $3}');" \
  "ZooKeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null);" \
  "kubectl $(kubectl version --client 2>/dev/null | head -1 | awk '{print $3}');" \
  "Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}');" \
  "$("$SLUICE_PYTHON" -c 'import grpc, sys; print("Python", sys.version.split()[0], "grpcio", grpc.__version__)')"

# A fresh clone gains nothing from incremental compilation, and its cache doubles the
# build's size on disk (CI runs beside the developer's own tree on the same disk).
[ -n "${CI:-}" ] && export CARGO_INCREMENTAL=0
echo "test.sh: disk free for the build: $(df -h --output=avail . | tail -1 | tr -d ' ')"

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "test.sh: cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: every test binary runs, so one failure does not hide the rest. The whole
# run is bounded (CI allows 90 minutes; a clean run takes well under 30): a hang fails.
status=0
timeout --kill-after=60 "${SLUICE_TEST_TIMEOUT:-75m}" cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
[ "$status" -eq 124 ] && echo "test.sh: cargo test did not finish within ${SLUICE_TEST_TIMEOUT:-75m}"
# One closing line for the whole workspace (cargo prints one per test binary), with cargo's
# own status: a test binary that crashed (a signal, an abort) reports no "test result" line,
# so the binaries started and the results reported are counted apart.
awk -v status="$status" '
  /^ *Running / || /^ *Doc-tests / { started++ }
  /^test result:/ { reported++; for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END {
    crashed = started - reported
    printf "tests: %d passed, %d failed", p, f
    if (crashed > 0) printf ", %d test binaries crashed or hung (no result line)", crashed
    printf "; cargo test exit status %d\n", status
    if (p == 0 || f > 0 || crashed > 0) exit 1
  }' "$log" || { [ "$status" -ne 0 ] || status=1; }
exit "$status"

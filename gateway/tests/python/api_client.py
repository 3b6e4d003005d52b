"""An independent client of Sluice's API (sluice.v1), in Python with grpcio.

Usage: api_client.py STUBS_DIR ADDRESS CA_PEM CERT_PEM KEY_PEM POD

STUBS_DIR holds the stubs grpc_tools.protoc generated from proto/sluice/v1/sluice.proto.
Drives drain -> watch -> restore of POD (namespace default) and checks the idempotency,
dry-run and precondition rules; prints one JSON summary line; exits 1 on the first broken
rule.
"""

import json
import sys
import threading

stubs, address, ca, cert, key, pod = sys.argv[1:7]
sys.path.insert(0, stubs)

import grpc  # noqa: E402
from sluice.v1 import sluice_pb2 as pb  # noqa: E402
from sluice.v1 import sluice_pb2_grpc as rpc  # noqa: E402


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check(cond, what):
    if not cond:
        print(json.dumps({"ok": False, "failed": what}))
        sys.exit(1)


creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
channel = grpc.secure_channel(address, creds)
api = rpc.SluiceStub(channel)
ref = pb.PodRef(namespace="default", name=pod)
target = pb.Target(pod=ref)

before = api.Get(pb.GetRequest(pod=ref), timeout=10)
check(before.state == "serving" and before.gate == "True", "the pod serves at the start: %s" % before)

# A watch, read in a thread: every state it sees, in order.
seen = []
synced = threading.Event()
watch = api.Watch(pb.WatchRequest(target=target))


def follow():
    try:
        for ev in watch:
            if ev.type == pb.WatchEvent.SYNCED:
                synced.set()
            elif ev.pod.state and (not seen or seen[-1] != ev.pod.state):
                seen.append(ev.pod.state)
    except grpc.RpcError:
        pass


thread = threading.Thread(target=follow, daemon=True)
thread.start()
check(synced.wait(10), "the watch's snapshot ends with SYNCED")

# AIP-163: a dry run answers the plan and writes nothing.
dry = list(api.Drain(pb.DrainRequest(target=target, reason="python dry run", validate_only=True), timeout=10))
check(len(dry) == 1 and dry[0].operation.validate_only, "a dry run answers once")
check("record sluice.dev/desired=drained" in dry[0].operation.plan[0], "the plan says what would be written")
check(api.Get(pb.GetRequest(pod=ref), timeout=10).etag == before.etag, "a dry run writes nothing")

# AIP-154: a stale etag is ABORTED.
stale = pb.Target(pod=pb.PodRef(namespace="default", name=pod, etag="1"))
try:
    list(api.Drain(pb.DrainRequest(target=stale, reason="stale"), timeout=10))
    check(False, "a stale etag is refused")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.ABORTED, "a stale etag is ABORTED, got %s" % e.code())

# The drain, with a request id, waited for.
request = pb.DrainRequest(target=target, reason="python drain", request_id="py-drain-1", wait=True, wait_seconds=60)
progress = list(api.Drain(request, timeout=90))
first = progress[0].operation
check(not first.replayed and first.request_id == "py-drain-1", "the first answer")
check(progress[-1].done and not progress[-1].timed_out, "the drain finished: %s" % progress[-1])
check(progress[-1].pods[-1].state == "drained", "the pod is drained")

# AIP-155: a repeat answers the first answer, writes nothing.
etag = api.Get(pb.GetRequest(pod=ref), timeout=10).etag
again = list(api.Drain(request, timeout=90))
check(again[0].operation.replayed and list(again[0].operation.plan) == list(first.plan), "a repeat is replayed")
check(api.Get(pb.GetRequest(pod=ref), timeout=10).etag == etag, "a repeat writes nothing")
try:
    other = pb.DrainRequest(target=target, reason="another reason", request_id="py-drain-1")
    list(api.Drain(other, timeout=10))
    check(False, "a reused request id is refused")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "a reused id is INVALID_ARGUMENT, got %s" % e.code())

restore = list(api.Restore(pb.RestoreRequest(target=target, reason="python restore", wait=True), timeout=90))
check(restore[-1].done, "the restore finished")
after = api.Get(pb.GetRequest(pod=ref), timeout=10)
check(after.state == "serving" and after.gate == "True", "the pod serves again")

deadline = 100
while seen[-1:] != ["serving"] and deadline:
    threading.Event().wait(0.05)
    deadline -= 1
watch.cancel()
order = [s for s in ["serving", "draining", "drained", "restoring", "serving"]]
positions = []
for s in order[1:]:
    start = positions[-1] + 1 if positions else 0
    check(s in seen[start:], "the watch saw %s after %s: %s" % (s, seen[:start], seen))
    positions.append(seen.index(s, start))
print(json.dumps({"ok": True, "watched": seen, "plan": list(first.plan)}))

#!/usr/bin/env bash
# Build and push the iotd image, deploy it to Kubernetes (namespace iot-telemetry) and wait for
# every role to roll out. See --help and docs/deployment.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/k8s/deploy.sh [--dry-run] [--help]

Builds the iotd image from the repository's Dockerfile, pushes it, applies deploy/k8s with the
image set to $IMAGE (through a temporary kustomize overlay: no tracked file changes) and waits
for the four Deployments to roll out.

  --dry-run   build nothing, touch no cluster: print the manifests that would be applied
              (`kubectl kustomize`); without kubectl, print the overlay's kustomization.yaml
  -h, --help  this help

Environment:
  IMAGE            image to build, push and deploy (default iotd:latest), e.g.
                   registry.example.com/iot/iotd:1.0.0 or NAME@sha256:DIGEST
  SKIP_BUILD=1     do not build (the image exists already)
  SKIP_PUSH=1|0    do not push / push; by default it pushes unless IMAGE has no registry part
                   (a plain `iotd:TAG` is only on this machine: load it into kind or minikube)
  SERVICEMONITOR   auto (default: deploy it when the cluster has the Prometheus Operator's CRD),
                   1 (always), 0 (never)
  ROLLOUT_TIMEOUT  how long to wait for each Deployment (default 300s)
  KUBECTL, DOCKER  the commands to use (default kubectl, docker)

An image tag of `latest` is pulled again at each pod start: deploy.sh then restarts the
Deployments that already existed so that they run the new build. Prefer a versioned tag.
EOF
}

NAMESPACE=iot-telemetry
DEPLOYMENTS=(ingestion-api dashboard-api aggregator-worker alerts-worker)
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd -P)

IMAGE=${IMAGE:-iotd:latest}
KUBECTL=${KUBECTL:-kubectl}
DOCKER=${DOCKER:-docker}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_PUSH=${SKIP_PUSH:-}
SERVICEMONITOR=${SERVICEMONITOR:-auto}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-300s}
DRY_RUN=0

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

while (($# > 0)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run) DRY_RUN=1 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

case "$SERVICEMONITOR" in
  auto | 0 | 1) ;;
  *) die "SERVICEMONITOR must be auto, 0 or 1, not '$SERVICEMONITOR'" ;;
esac

# Split IMAGE into kustomize's newName and newTag or digest. A ':' after the last '/' starts the
# tag; one before it belongs to a registry's port (registry:5000/iotd).
image_name=$IMAGE
image_tag=
image_digest=
if [[ $image_name == *@* ]]; then
  image_digest=${image_name#*@}
  image_name=${image_name%%@*}
fi
last_part=${image_name##*/}
if [[ $last_part == *:* ]]; then
  image_tag=${last_part##*:}
  image_name=${image_name%:*}
fi
if [[ -z $image_tag && -z $image_digest ]]; then
  image_tag=latest
fi
[[ -n $image_name && $image_name != */ && $image_name != *' '* ]] || die "not an image reference: '$IMAGE'"
[[ -z $image_digest || $image_digest == sha256:* ]] || die "not a digest in IMAGE: '$image_digest'"

# relpath FROM TO: the path of directory TO relative to directory FROM (both absolute, without
# symlinks). kustomize accepts only relative paths to a base.
relpath() {
  local from=$1 to=$2 up=
  while [[ $from != / && $to != "$from" && $to != "$from"/* ]]; do
    from=$(dirname "$from")
    up="../$up"
  done
  local rest=${to#"$from"}
  rest=${rest#/}
  if [[ -z $rest ]]; then
    rest=.
  fi
  printf '%s%s\n' "$up" "$rest"
}

have_kubectl() {
  command -v "$KUBECTL" >/dev/null 2>&1
}

# The ServiceMonitor needs the Prometheus Operator's CRD; `auto` asks the cluster.
with_servicemonitor=1
if [[ $SERVICEMONITOR == 0 ]]; then
  with_servicemonitor=0
elif [[ $SERVICEMONITOR == auto && $DRY_RUN == 0 ]]; then
  if ! "$KUBECTL" get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
    echo "deploy.sh: no ServiceMonitor CRD (Prometheus Operator) in the cluster: skipping the ServiceMonitor" >&2
    with_servicemonitor=0
  fi
fi

overlay=$(mktemp -d "${TMPDIR:-/tmp}/iotd-k8s.XXXXXX")
trap 'rm -rf "$overlay"' EXIT
overlay=$(cd "$overlay" && pwd -P)
base=$(relpath "$overlay" "$SCRIPT_DIR")
{
  echo "# overlay: $overlay"
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - $base"
  echo "images:"
  echo "  - name: iotd"
  echo "    newName: \"$image_name\""
  if [[ -n $image_digest ]]; then
    echo "    digest: \"$image_digest\""
  else
    echo "    newTag: \"$image_tag\""
  fi
  if [[ $with_servicemonitor == 0 ]]; then
    cat <<'EOF'
patches:
  - patch: |-
      $patch: delete
      apiVersion: monitoring.coreos.com/v1
      kind: ServiceMonitor
      metadata:
        name: iotd
EOF
  fi
} >"$overlay/kustomization.yaml"

if [[ $DRY_RUN == 1 ]]; then
  if have_kubectl; then
    "$KUBECTL" kustomize "$overlay"
  else
    echo "deploy.sh: '$KUBECTL' not found: printing the overlay instead of the manifests; its base lists:" >&2
    sed -n 's/^  - \(.*\.yaml\)$/  \1/p' "$SCRIPT_DIR/kustomization.yaml" >&2
    cat "$overlay/kustomization.yaml"
  fi
  exit 0
fi

have_kubectl || die "'$KUBECTL' not found (set KUBECTL)"

if [[ $SKIP_BUILD != 1 ]]; then
  echo "==> docker build -t $IMAGE $ROOT"
  "$DOCKER" build -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT"
fi

if [[ -z $SKIP_PUSH ]]; then
  # Without a registry part (a '/' with a '.' or ':' before it, or localhost), a push would go to
  # Docker Hub's library/, which is surely not meant.
  first=${image_name%%/*}
  if [[ $image_name == */* && ($first == *.* || $first == *:* || $first == localhost) ]]; then
    SKIP_PUSH=0
  else
    echo "deploy.sh: IMAGE '$IMAGE' names no registry: not pushing (SKIP_PUSH=0 to push anyway)" >&2
    SKIP_PUSH=1
  fi
fi
if [[ $SKIP_PUSH != 1 ]]; then
  echo "==> docker push $IMAGE"
  "$DOCKER" push "$IMAGE"
fi

existing=()
for d in "${DEPLOYMENTS[@]}"; do
  if "$KUBECTL" -n "$NAMESPACE" get deployment "$d" >/dev/null 2>&1; then
    existing+=("$d")
  fi
done

echo "==> $KUBECTL apply -k deploy/k8s (image $IMAGE)"
"$KUBECTL" apply -k "$overlay"

if [[ -z $image_digest && $image_tag == latest && ${#existing[@]} -gt 0 ]]; then
  echo "==> restarting ${existing[*]} (tag latest: the pods pull the image again)"
  for d in "${existing[@]}"; do
    "$KUBECTL" -n "$NAMESPACE" rollout restart deployment "$d"
  done
fi

failed=0
for d in "${DEPLOYMENTS[@]}"; do
  echo "==> waiting for deployment/$d (up to $ROLLOUT_TIMEOUT)"
  if ! "$KUBECTL" -n "$NAMESPACE" rollout status deployment "$d" --timeout="$ROLLOUT_TIMEOUT"; then
    failed=1
    echo "deploy.sh: deployment/$d did not become ready; its pods and their last events:" >&2
    "$KUBECTL" -n "$NAMESPACE" get pods -l "app.kubernetes.io/component=$d" -o wide >&2 || true
    "$KUBECTL" -n "$NAMESPACE" describe pods -l "app.kubernetes.io/component=$d" 2>/dev/null | tail -n 20 >&2 || true
  fi
done
((failed == 0)) || die "some Deployments are not ready (Kafka or MongoDB unreachable? see the events above and 'kubectl -n $NAMESPACE logs deployment/NAME')"

host=$("$KUBECTL" -n "$NAMESPACE" get ingress iotd -o jsonpath='{.spec.rules[0].host}' 2>/dev/null || true)
address=$("$KUBECTL" -n "$NAMESPACE" get ingress iotd \
  -o jsonpath='{.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}' 2>/dev/null || true)
cat <<EOF

iotd is running in namespace $NAMESPACE ($IMAGE).
  Through the ingress: http://${host:-HOST}/ingest and http://${host:-HOST}/stats
    (ingress address: ${address:-not assigned yet}; point ${host:-the host} at it, or
     curl -H 'Host: ${host:-HOST}' http://${address:-ADDRESS}/stats)
  Without the ingress:
    $KUBECTL -n $NAMESPACE port-forward service/ingestion-api 8001:8001
    $KUBECTL -n $NAMESPACE port-forward service/dashboard-api 8002:8002
    curl -X POST http://localhost:8001/ingest -H 'Content-Type: application/json' \\
      -d '{"device_id":"dev-1","temperature_c":21.5,"humidity":40}'
    curl http://localhost:8002/stats
  Status: $KUBECTL -n $NAMESPACE get pods,hpa,ingress
EOF

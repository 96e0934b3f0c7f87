// Package k8s tests the Kubernetes manifests of deploy/k8s: strict decoding with Kubernetes' own
// types, the seed's scaling numbers, probes, resources and security context, that every selector
// and backend points at something that exists, the kustomization (built with krusty) and
// deploy.sh's overlay. Run: cd tests/deploy/k8s && go test ./...
package k8s

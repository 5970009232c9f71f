// Package deploycheck holds the tests that check the deployment artifacts
// against the ledgerd they deploy: every flag, configuration key and LEDGER_*
// variable that the Helm chart's renders (deploy/helm/ledgerd/testdata, kept
// equal to `helm template` by `make helm-check`) and the systemd unit
// (deploy/systemd) pass must be one that `ledgerd serve --help` or `ledgerd
// migrate --help` lists, and the pieces of a render must fit together
// (ports, probes, mounts, the shutdown budget, the security context, the
// Pod Security Standards' restricted level). Each set of settings is also
// given to a real `ledgerd serve`, which must accept every value and bind
// its ports (it then waits for a database that is not there, and stops).
//
// It lives in the tools module because it reads Kubernetes types, which the
// ledgerd module does not depend on. Run it with `make helm-check`.
package deploycheck

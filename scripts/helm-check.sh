#!/usr/bin/env bash
# scripts/helm-check.sh HELM [--update] - check the Helm chart in
# deploy/helm/ledgerd: `helm lint --strict` and a `helm template` render for
# each values file below, compared with its golden file in testdata/ (with
# --update, the renders are written there instead). A render that differs
# fails with the diff.
set -euo pipefail
cd "$(dirname "$0")/.."

helm="$1"
update="${2:-}"
readonly chart=deploy/helm/ledgerd

# golden file -> values file ("" for the chart's defaults).
declare -A renders=(
	[default]=""
	[production]="$chart/ci/production-values.yaml"
	[env]="$chart/ci/env-values.yaml"
)

failed=0
for name in "${!renders[@]}"; do
	values=()
	if [[ -n "${renders[$name]}" ]]; then
		values=(--values "${renders[$name]}")
	fi
	"$helm" lint --strict "$chart" "${values[@]}" >/dev/null || {
		echo "helm lint --strict failed for the $name values:" >&2
		"$helm" lint --strict "$chart" "${values[@]}" >&2 || true
		failed=1
		continue
	}
	# A fixed release name and namespace, so that the render is stable.
	rendered="$("$helm" template ledgerd "$chart" --namespace ledgerd "${values[@]}")"
	golden="$chart/testdata/$name.yaml"
	if [[ "$update" == "--update" ]]; then
		printf '%s\n' "$rendered" >"$golden"
		echo "wrote $golden"
	elif ! diff -u "$golden" <(printf '%s\n' "$rendered") >&2; then
		echo "$golden differs from the chart's render (above): run 'make helm-golden' and review the diff" >&2
		failed=1
	fi
done
exit "$failed"

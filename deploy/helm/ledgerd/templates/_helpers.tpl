{{/*
The chart's names and labels, after the conventions of `helm create`.
*/}}
{{- define "ledgerd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ledgerd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ledgerd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ledgerd.selectorLabels" . }}
app.kubernetes.io/version: {{ include "ledgerd.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ledgerd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ledgerd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ledgerd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ledgerd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ledgerd.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "ledgerd.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "ledgerd.imageTag" .) }}
{{- end }}

{{/*
ledgerd.settings: every setting of `ledgerd serve` that the chart passes, as
a YAML mapping from flag name (without dashes) to value: the chart's own
(addresses, TLS files, shutdown, --no-migrate) and .Values.config. A key of
.Values.config that the chart owns is an error naming the value to set
instead, so that the two cannot disagree.
*/}}
{{- define "ledgerd.settings" -}}
{{- $owned := dict
  "listen-addr" (printf "0.0.0.0:%d" (int .Values.ports.grpc))
  "http-addr" (printf "0.0.0.0:%d" (int .Values.ports.http))
  "metrics-listen-addr" (printf "0.0.0.0:%d" (int .Values.ports.metrics))
  "lame-duck-delay" (printf "%ds" (int .Values.shutdown.lameDuckDelaySeconds))
  "shutdown-timeout" (printf "%ds" (int .Values.shutdown.shutdownTimeoutSeconds))
  "no-migrate" true
}}
{{- if .Values.tls.enabled }}
{{- $_ := set $owned "tls-cert-file" "/etc/ledgerd/tls/tls.crt" }}
{{- $_ := set $owned "tls-key-file" "/etc/ledgerd/tls/tls.key" }}
{{- if .Values.tls.clientCASecret }}
{{- $_ := set $owned "tls-client-ca-file" (printf "/etc/ledgerd/client-ca/%s" .Values.tls.clientCAKey) }}
{{- $_ := set $owned "tls-client-auth" .Values.tls.clientAuth }}
{{- end }}
{{- end }}
{{- $instead := dict
  "listen-addr" "ports.grpc" "http-addr" "ports.http" "metrics-listen-addr" "ports.metrics"
  "lame-duck-delay" "shutdown.lameDuckDelaySeconds" "shutdown-timeout" "shutdown.shutdownTimeoutSeconds"
  "no-migrate" "nothing: the replicas always run with --no-migrate, and the migration Job migrates" "tls-cert-file" "tls.certSecret" "tls-key-file" "tls.certSecret"
  "tls-client-ca-file" "tls.clientCASecret" "tls-client-auth" "tls.clientAuth"
  "database-url" "database.urlSecret" "read-database-url" "extraEnv (LEDGER_READ_DATABASE_URL from a Secret)"
  "config" "the chart's ConfigMap"
}}
{{- range $key, $value := .Values.config }}
{{- if hasKey $instead $key }}
{{- fail (printf "config.%s: the chart sets --%s itself; set %s instead" $key $key (get $instead $key)) }}
{{- end }}
{{- end }}
{{- range $key, $value := merge $owned .Values.config }}
{{- /* Helm reads numbers as float64: write whole ones as integers, not 1e+07. */}}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{ $key }}: {{ int64 $value }}
{{- else }}
{{ $key }}: {{ toYaml $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
ledgerd.env: the settings as LEDGER_* environment variables (configSource
"env"), the name of each the flag's in upper case with "_" for "-".
*/}}
{{- define "ledgerd.env" -}}
{{- range $key, $value := fromYaml (include "ledgerd.settings" .) }}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $value = int64 $value }}
{{- end }}
{{ printf "LEDGER_%s" ($key | upper | replace "-" "_") }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Names: DNS labels, at most 63 characters. */}}
{{- define "anomalyd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "anomalyd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "anomalyd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "anomalyd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "anomalyd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "anomalyd.labels" -}}
helm.sh/chart: {{ include "anomalyd.chart" . }}
{{ include "anomalyd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: anomalyd
{{- end -}}

{{- define "anomalyd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "anomalyd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A shard's resource name: the full name alone with one shard, "<fullname>-<shard>" with
     more. Called with (dict "root" $ "shard" N). */}}
{{- define "anomalyd.shardName" -}}
{{- $full := include "anomalyd.fullname" .root -}}
{{- if gt (int .root.Values.shards) 1 -}}
{{- printf "%s-%d" ($full | trunc 58 | trimSuffix "-") (int .shard) -}}
{{- else -}}
{{- $full -}}
{{- end -}}
{{- end -}}

{{- define "anomalyd.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Whether the config reads Prometheus: such sources must not be replicated. */}}
{{- define "anomalyd.readsPrometheus" -}}
{{- range (.Values.config.sources | default list) -}}
{{- if hasKey . "prometheus" }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* The config file of one shard, as YAML: the values' config with the admin address set to
     the chart's port, rendered through tpl with .Shard and .Shards. Called with
     (dict "root" $ "shard" N). */}}
{{- define "anomalyd.config" -}}
{{- $root := .root -}}
{{- $port := int $root.Values.admin.port -}}
{{- $cfg := deepCopy ($root.Values.config | default dict) -}}
{{- if not (hasKey $cfg "daemon") -}}
{{- $_ := set $cfg "daemon" dict -}}
{{- end -}}
{{- if not (hasKey $cfg.daemon "admin") -}}
{{- $_ := set $cfg.daemon "admin" dict -}}
{{- end -}}
{{- if hasKey $cfg.daemon.admin "listen" -}}
{{- if not (hasSuffix (printf ":%d" $port) (toString $cfg.daemon.admin.listen)) -}}
{{- fail (printf "config.daemon.admin.listen (%s) must listen on admin.port (%d): the probes, the Service and the ServiceMonitor use it" $cfg.daemon.admin.listen $port) -}}
{{- end -}}
{{- else -}}
{{- $_ := set $cfg.daemon.admin "listen" (printf ":%d" $port) -}}
{{- end -}}
{{- $ctx := dict "Shard" (int .shard) "Shards" (int $root.Values.shards) "Values" $root.Values "Release" $root.Release "Chart" $root.Chart "Template" $root.Template -}}
{{- tpl (toYaml $cfg) $ctx -}}
{{- end -}}

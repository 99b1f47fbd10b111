{{- define "registry.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "registry.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "registry.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: core
{{- end -}}

{{/* The chart puts its own service names in front of the user's NO_PROXY list. */}}
{{- define "registry.noProxy" -}}
{{- $names := list (printf "%s-core" (include "registry.fullname" .)) -}}
{{- with .Values.database.host }}{{ $names = append $names (tpl . $) }}{{ end -}}
{{- join "," (append $names .Values.proxy.noProxy) -}}
{{- end -}}

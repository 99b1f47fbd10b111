{{- define "cpn-job.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* The ServiceAccount is named after the chart, i.e. after the dependency alias. */}}
{{- define "cpn-job.serviceAccountName" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "cpn-job.container" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- with .Values.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if eq .Values.global.platform "kubernetes" }}
securityContext:
  runAsUser: 1000
  runAsGroup: 1000
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end }}
{{- end -}}

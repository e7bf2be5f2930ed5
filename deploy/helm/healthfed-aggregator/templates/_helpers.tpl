{{/* Name of the release's objects. */}}
{{- define "healthfed-aggregator.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "healthfed-aggregator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "healthfed-aggregator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "healthfed-aggregator.secretName" -}}
{{- default (printf "%s-tls" (include "healthfed-aggregator.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "healthfed-aggregator.planConfigMap" -}}
{{- default (printf "%s-plan" (include "healthfed-aggregator.fullname" .)) .Values.existingPlanConfigMap -}}
{{- end -}}

{{/* The ConfigMap holding the enrolment records (<silo>.json). */}}
{{- define "healthfed-aggregator.enrolledConfigMap" -}}
{{- default (printf "%s-enrolled" (include "healthfed-aggregator.fullname" .)) .Values.existingEnrolledConfigMap -}}
{{- end -}}

{{/*
Labels Helm adds to the metadata of every object it renders, next to the labels deploy/
gives the object. Pod templates and selectors carry only deploy/'s labels, so that
selectors stay those of `kubectl apply -k deploy/` (they are immutable) and a chart
upgrade alone does not restart Pods.
*/}}
{{- define "hostplug.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "hostplug.operatorLabels" -}}
app.kubernetes.io/name: hostplug-operator
app.kubernetes.io/part-of: hostplug
{{ include "hostplug.helmLabels" . }}
{{- end }}

{{/* Labels of the console's objects. */}}
{{- define "hostplug.consoleLabels" -}}
app.kubernetes.io/name: hostplug-web
app.kubernetes.io/part-of: hostplug
{{ include "hostplug.helmLabels" . }}
{{- end }}

{{/* Labels of objects that belong to hostplug as a whole. */}}
{{- define "hostplug.partOfLabels" -}}
app.kubernetes.io/part-of: hostplug
{{ include "hostplug.helmLabels" . }}
{{- end }}

{{/* An image reference: repository and tag, the tag defaulting to the chart's appVersion. */}}
{{- define "hostplug.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if not .image.repository -}}
{{- fail "images.*.repository must not be empty" -}}
{{- end -}}
{{- printf "%s:%s" .image.repository (toString $tag) -}}
{{- end }}

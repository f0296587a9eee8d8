{{/* The release's objects are named after it; "meshform" alone when the release is called that. */}}
{{- define "meshform.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meshform.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "meshform.labels" -}}
{{ include "meshform.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "meshform.serviceAccountName" -}}
{{- default (include "meshform.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "meshform.configMapName" -}}
{{- if .Values.meshToml.inline -}}
{{- printf "%s-mesh-toml" (include "meshform.fullname" .) -}}
{{- else -}}
{{- required "meshToml.inline or meshToml.existingConfigMap is required" .Values.meshToml.existingConfigMap -}}
{{- end -}}
{{- end -}}

{{/*
The mesh's name ([mesh] name of mesh.toml), which the Lease and the status ConfigMap carry:
from meshToml.inline when given (a value that disagrees with it is refused), else meshName.
*/}}
{{- define "meshform.meshName" -}}
{{- if .Values.meshToml.inline -}}
{{- $toml := fromToml .Values.meshToml.inline -}}
{{- if hasKey $toml "Error" -}}
{{- fail (printf "meshToml.inline is not TOML: %s" $toml.Error) -}}
{{- end -}}
{{- $name := (get (get $toml "mesh" | default dict) "name") | default "" -}}
{{- if not $name -}}
{{- fail "meshToml.inline has no [mesh] name" -}}
{{- end -}}
{{- if and .Values.meshName (ne .Values.meshName $name) -}}
{{- fail (printf "meshName %q is not meshToml.inline's [mesh] name %q" .Values.meshName $name) -}}
{{- end -}}
{{- $name -}}
{{- else -}}
{{- required "meshName is required with meshToml.existingConfigMap: the [mesh] name of its mesh.toml" .Values.meshName -}}
{{- end -}}
{{- end -}}

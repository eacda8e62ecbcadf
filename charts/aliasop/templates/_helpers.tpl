{{/* The release's full name: names every object, cluster-scoped ones included. */}}
{{- define "aliasop.fullname" -}}
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

{{/* The chart's name, the value of app.kubernetes.io/name (nameOverride to change it). */}}
{{- define "aliasop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The operator pods' selector, immutable for the life of a Deployment: the chart's name and the
release (unique in its namespace), Kubernetes' recommended labels, so that releases per shard
in one namespace select their own pods only.
*/}}
{{- define "aliasop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aliasop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* No app.kubernetes.io/managed-by: manifests/ is this chart rendered for kubectl. */}}
{{- define "aliasop.labels" -}}
{{ include "aliasop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: aliasop
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "aliasop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aliasop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: the existing ServiceAccount to run as" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Replicas: several only with leader election (without it they would fight). */}}
{{- define "aliasop.replicas" -}}
{{- if .Values.leaderElection.enabled -}}{{ .Values.replicaCount }}{{- else -}}1{{- end -}}
{{- end -}}

{{/*
The Lease's name: leaderElection.leaseName, else the name the operator gives it itself
(aliasop.sharding.lease_name): `aliasop`, or with a watch label selector `aliasop-<first ten
hex digits of its sha256>`, so that each shard has its own. The operator is told it
(ALIASOP_LEADER_ELECT_LEASE_NAME) and the Role grants exactly it.
*/}}
{{- define "aliasop.leaseName" -}}
{{- if .Values.leaderElection.leaseName -}}
{{- .Values.leaderElection.leaseName -}}
{{- else if .Values.watchLabelSelector -}}
{{- printf "aliasop-%s" (sha256sum .Values.watchLabelSelector | trunc 10) -}}
{{- else -}}
aliasop
{{- end -}}
{{- end -}}

{{/*
An image's reference: [registry/]repository:tag, the tag defaulting to the chart's appVersion.
Called with (dict "image" .Values.image "appVersion" .Chart.AppVersion).
*/}}
{{- define "aliasop.image" -}}
{{- $repository := .image.repository -}}
{{- with .image.registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}{{ end -}}
{{- printf "%s:%s" $repository (.image.tag | default .appVersion) -}}
{{- end -}}

{{/* The Secret listing the notification receivers; empty: none. */}}
{{- define "aliasop.notificationsSecret" -}}
{{- if .Values.notifications.existingSecret -}}
{{- .Values.notifications.existingSecret -}}
{{- else if .Values.notifications.receivers -}}
{{- include "aliasop.fullname" . }}-notifications
{{- end -}}
{{- end }}

{{/*
Names, labels and the pieces every component shares. Labels use app.kubernetes.io/* only.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "cascade.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release name, with the chart name unless it already holds it. */}}
{{- define "cascade.fullname" -}}
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

{{/* Labels of every resource the chart renders. */}}
{{- define "cascade.labels" -}}
{{ include "cascade.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cascade
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the release's own pods (with a component label beside them). */}}
{{- define "cascade.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cascade.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's selector labels. */}}
{{- define "cascade.operator.selectorLabels" -}}
{{ include "cascade.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's name (Deployment, ServiceAccount, RBAC, Service). */}}
{{- define "cascade.operator.fullname" -}}
{{- printf "%s-operator" (include "cascade.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cascade.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "cascade.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the operator runs more than one replica or peering is asked for. */}}
{{- define "cascade.operator.peering" -}}
{{- if or .Values.operator.peering.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}

{{/*
An image reference from a map with repository, tag and digest (the digest wins); pass a dict
with that map as "image" and the root context as "ctx".
*/}}
{{- define "cascade.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The serving image: the operator, the helm test and, by default, the graph's pods. */}}
{{- define "cascade.image" -}}
{{- include "cascade.imageRef" (dict "image" .Values.image "ctx" .) }}
{{- end }}

{{/* The factory image (torch): only the containers that run `cascade build`. */}}
{{- define "cascade.factoryImage" -}}
{{- include "cascade.imageRef" (dict "image" .Values.image.factory "ctx" .) }}
{{- end }}

{{/* The image the operator puts into the graph's serving pods. */}}
{{- define "cascade.graphImage" -}}
{{- default (include "cascade.image" .) .Values.operator.graphImage }}
{{- end }}

{{/*
Labels the operator puts on the pods of an InferenceGraph's children; pass a dict with the root
context as "ctx" and "component" (graph or triton).
*/}}
{{- define "cascade.graph.selectorLabels" -}}
app.kubernetes.io/name: cascade
app.kubernetes.io/instance: {{ .ctx.Values.graph.name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: cascade-operator
serving.cascade.dev/graph: {{ .ctx.Values.graph.name }}
{{- end }}

{{/* The RayService's name and the Service KubeRay creates for its Serve application. */}}
{{- define "cascade.rayService.name" -}}
{{- printf "%s-ray" .Values.graph.name | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* Where clients reach the graph's HTTP port inside the cluster. */}}
{{- define "cascade.graph.service" -}}
{{- if .Values.rayService.enabled }}
{{- printf "%s-serve-svc" (include "cascade.rayService.name" .) }}
{{- else }}
{{- printf "%s-graph" .Values.graph.name }}
{{- end }}
{{- end }}

{{/*
Fail when a minReplicas exceeds its maxReplicas: JSON Schema cannot compare two values, and the
API server would store the object (the InferenceGraph CRD's CEL rule needs Kubernetes >= 1.25;
the RayService CRD has none), leaving the error to a controller's logs. Pass a dict with
"bounds" (the map holding both keys) and "path" (its dotted name in the values).
*/}}
{{- define "cascade.checkReplicaBounds" -}}
{{- $min := int .bounds.minReplicas }}
{{- $max := int .bounds.maxReplicas }}
{{- if gt $min $max }}
{{- fail (printf "%s.minReplicas (%d) must not exceed %s.maxReplicas (%d)" .path $min .path $max) }}
{{- end }}
{{- end }}

{{/* The claim that holds the model repository (source pvc). */}}
{{- define "cascade.models.claimName" -}}
{{- $pvc := .Values.graph.modelRepository.pvc }}
{{- if $pvc.claimName }}
{{- $pvc.claimName }}
{{- else if $pvc.create }}
{{- printf "%s-models" (include "cascade.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- fail "graph.modelRepository.pvc.claimName: set it, or set graph.modelRepository.pvc.create=true" }}
{{- end }}
{{- end }}

{{/* The InferenceGraph's spec.modelRepository: exactly one source. */}}
{{- define "cascade.models.repository" -}}
{{- $repo := .Values.graph.modelRepository }}
{{- if eq $repo.source "pvc" }}
pvc: {{ include "cascade.models.claimName" . }}
{{- else if eq $repo.source "uri" }}
{{- if not $repo.uri }}
{{- fail "graph.modelRepository.uri: set it when graph.modelRepository.source is uri" }}
{{- end }}
uri: {{ $repo.uri | quote }}
{{- else }}
build:
  dataset: {{ $repo.build.dataset }}
  versions: {{ $repo.build.versions | int }}
{{- end }}
{{- end }}

{{/* A Model's spec.storageUri: where the repository the graph's pods see lives. */}}
{{- define "cascade.models.storageUri" -}}
{{- $repo := .Values.graph.modelRepository }}
{{- if eq $repo.source "pvc" }}
{{- printf "pvc://%s/" (include "cascade.models.claimName" .) }}
{{- else if eq $repo.source "uri" }}
{{- $repo.uri }}
{{- else }}
{{- print "file:///models/" }}
{{- end }}
{{- end }}

{{/* The Model resources the graph's stages name, in stage order. */}}
{{- define "cascade.models.names" -}}
{{- $stages := .Values.graph.stages }}
{{- $names := list $stages.retrieval.model }}
{{- range $stages.ranking.models }}
{{- $names = append $names . }}
{{- end }}
{{- $names = append $names $stages.ranking.combiner }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* A writable /tmp for containers whose root filesystem is read-only. */}}
{{- define "cascade.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{- define "cascade.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* The labels every monitor and rule carries. */}}
{{- define "cascade.monitoring.labels" -}}
{{ include "cascade.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

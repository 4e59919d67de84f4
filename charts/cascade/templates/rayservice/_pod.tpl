{{/*
The pod template of a Ray node of the RayService; pass a dict with the root context as "ctx",
"node" (head or worker) and "resources".
*/}}
{{- define "cascade.rayService.podTemplate" -}}
{{- $ := .ctx }}
{{- $repo := $.Values.graph.modelRepository }}
metadata:
  labels:
    {{- include "cascade.labels" $ | nindent 4 }}
    app.kubernetes.io/component: ray
    serving.cascade.dev/graph: {{ $.Values.graph.name }}
spec:
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if eq $repo.source "build" }}
  initContainers:
    - name: build-models
      image: {{ include "cascade.factoryImage" $ | quote }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      {{- if gt (int $repo.build.versions) 1 }}
      command:
        - sh
        - -c
        - set -e; for i in $(seq {{ $repo.build.versions | int }}); do cascade build --dataset {{ $repo.build.dataset }} --out /models; done
      {{- else }}
      command:
        - cascade
        - build
        - --dataset
        - {{ $repo.build.dataset }}
        - --out
        - /models
      {{- end }}
      env:
        - name: HOME
          value: /tmp
      resources:
        {{- toYaml $.Values.rayService.buildResources | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: /models
        {{- include "cascade.tmpMount" $ | nindent 8 }}
  {{- end }}
  containers:
    - name: ray-{{ .node }}
      image: {{ include "cascade.graphImage" $ | quote }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      env:
        - name: HOME
          value: /tmp
        - name: RAY_USAGE_STATS_ENABLED
          value: "0"
      ports:
        {{- if eq .node "head" }}
        - name: gcs-server
          containerPort: 6379
        - name: dashboard
          containerPort: 8265
        - name: client
          containerPort: 10001
        {{- end }}
        - name: serve
          containerPort: 8000
        - name: grpc
          containerPort: 9000
        - name: dashboard-agent
          containerPort: 52365
      {{- /* The image has no wget for KubeRay's default probes; Ray's agent answers these. */}}
      livenessProbe:
        httpGet:
          path: /api/local_raylet_healthz
          port: dashboard-agent
        initialDelaySeconds: 30
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 12
      readinessProbe:
        httpGet:
          path: /api/local_raylet_healthz
          port: dashboard-agent
        initialDelaySeconds: 10
        periodSeconds: 5
        timeoutSeconds: 5
        failureThreshold: 10
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: /models
          {{- if eq $repo.source "pvc" }}
          readOnly: true
          {{- end }}
        {{- include "cascade.tmpMount" $ | nindent 8 }}
  volumes:
    - name: models
      {{- if eq $repo.source "pvc" }}
      persistentVolumeClaim:
        claimName: {{ include "cascade.models.claimName" $ }}
        readOnly: true
      {{- else }}
      emptyDir:
        sizeLimit: 4Gi
      {{- end }}
    {{- /* Ray keeps its session, logs and object spilling under /tmp/ray. */}}
    - name: tmp
      emptyDir:
        sizeLimit: 8Gi
{{- end }}

{{/* The chart's name, and the release's full name (release-cove unless the release says cove). */}}
{{- define "cove.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cove.fullname" -}}
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

{{- define "cove.baseLabels" -}}
app.kubernetes.io/name: {{ include "cove.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* cove's pods; the hosts.toml DaemonSet's are component hosts-toml. */}}
{{- define "cove.selectorLabels" -}}
{{ include "cove.baseLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "cove.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cove.baseLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "cove.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the admin's first password, and its key. */}}
{{- define "cove.adminSecret" -}}
{{- default (printf "%s-admin" (include "cove.fullname" .)) .Values.adminPassword.existingSecret -}}
{{- end -}}

{{- define "cove.clusterSecret" -}}
{{- default (printf "%s-cluster" (include "cove.fullname" .)) .Values.fleet.clusterSecret.existingSecret -}}
{{- end -}}

{{/* public_url: publicURL, else the first ingress host. */}}
{{- define "cove.publicURL" -}}
{{- if .Values.publicURL -}}
{{- .Values.publicURL -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) (first .Values.ingress.hosts) -}}
{{- end -}}
{{- end -}}

{{/*
A secret value generated once: the one already in the cluster when there is one (lookup finds
nothing under helm template), else a new one. The prefix meets cove's password policy (an
upper-case letter, a lower-case letter and a digit) whatever the random part holds.
*/}}
{{- define "cove.generated" -}}
{{- $old := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $old $old.data (hasKey $old.data .key) -}}
{{- index $old.data .key -}}
{{- else -}}
{{- printf "Cv1%s" (randAlphaNum .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Fleet mode's required values, each failure naming the value to set. */}}
{{- define "cove.checkFleet" -}}
{{- if .Values.fleet.enabled -}}
{{- if not .Values.fleet.postgres.existingSecret -}}
{{- fail "fleet.enabled: set fleet.postgres.existingSecret to a Secret holding the PostgreSQL DSN under fleet.postgres.dsnKey" -}}
{{- end -}}
{{- if not .Values.fleet.s3.existingSecret -}}
{{- fail "fleet.enabled: set fleet.s3.existingSecret to a Secret holding the bucket's keys under fleet.s3.accessKeyKey and fleet.s3.secretKeyKey" -}}
{{- end -}}
{{- if not (regexMatch "^https?://" .Values.fleet.s3.endpoint) -}}
{{- fail (printf "fleet.enabled: fleet.s3.endpoint must be the S3 API's URL with its scheme, such as https://s3.example.com; got %q" .Values.fleet.s3.endpoint) -}}
{{- end -}}
{{- if not .Values.fleet.s3.bucket -}}
{{- fail "fleet.enabled: set fleet.s3.bucket to the bucket's name (create it first)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* cove's environment: COVE_* variables, the secrets by reference. */}}
{{- define "cove.env" -}}
- name: COVE_CONFIG
  value: /etc/cove/cove.yaml
- name: COVE_LISTEN
  value: ":{{ .Values.service.port }}"
- name: COVE_DATA
  value: /data
{{- with include "cove.publicURL" . }}
- name: COVE_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.trustedProxies }}
- name: COVE_TRUSTED_PROXIES
  value: {{ join "," . | quote }}
{{- end }}
{{- if .Values.metrics.port }}
- name: COVE_METRICS_LISTEN
  value: ":{{ .Values.metrics.port }}"
{{- end }}
- name: COVE_AUTH_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "cove.adminSecret" . }}
      key: {{ .Values.adminPassword.existingSecretKey }}
{{- if .Values.fleet.enabled }}
- name: COVE_CLUSTER_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: COVE_CLUSTER_ADVERTISE
  value: "http://$(POD_IP):{{ .Values.service.port }}"
- name: COVE_CLUSTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "cove.clusterSecret" . }}
      key: {{ .Values.fleet.clusterSecret.key }}
- name: COVE_STORAGE_METADATA_KIND
  value: postgres
- name: COVE_STORAGE_METADATA_POSTGRES_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.fleet.postgres.existingSecret }}
      key: {{ .Values.fleet.postgres.dsnKey }}
- name: COVE_STORAGE_BLOBS_KIND
  value: s3
- name: COVE_STORAGE_BLOBS_S3_ENDPOINT
  value: {{ .Values.fleet.s3.endpoint | quote }}
- name: COVE_STORAGE_BLOBS_S3_BUCKET
  value: {{ .Values.fleet.s3.bucket | quote }}
- name: COVE_STORAGE_BLOBS_S3_REGION
  value: {{ .Values.fleet.s3.region | quote }}
{{- with .Values.fleet.s3.prefix }}
- name: COVE_STORAGE_BLOBS_S3_PREFIX
  value: {{ . | quote }}
{{- end }}
- name: COVE_STORAGE_BLOBS_S3_PATH_STYLE
  value: {{ .Values.fleet.s3.pathStyle | quote }}
- name: COVE_STORAGE_BLOBS_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.fleet.s3.existingSecret }}
      key: {{ .Values.fleet.s3.accessKeyKey }}
- name: COVE_STORAGE_BLOBS_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.fleet.s3.existingSecret }}
      key: {{ .Values.fleet.s3.secretKeyKey }}
- name: COVE_STORAGE_HOT_TIER_MAX_SIZE
  value: {{ .Values.fleet.hotTier.maxSize | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod's cove container, shared by the StatefulSet and the Deployment. */}}
{{- define "cove.container" -}}
- name: cove
  image: {{ include "cove.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [serve]
  env:
    {{- include "cove.env" . | nindent 4 }}
  ports:
    - name: http
      containerPort: {{ .Values.service.port }}
      protocol: TCP
    {{- if .Values.metrics.port }}
    - name: metrics
      containerPort: {{ .Values.metrics.port }}
      protocol: TCP
    {{- end }}
  startupProbe:
    httpGet: {path: /healthz, port: http}
    {{- toYaml .Values.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet: {path: /healthz, port: http}
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet: {path: /readyz, port: http}
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  volumeMounts:
    - name: data
      mountPath: /data
    - name: config
      mountPath: /etc/cove
      readOnly: true
{{- end -}}

{{/* The pod's settings besides its containers and volumes. */}}
{{- define "cove.podSpec" -}}
automountServiceAccountToken: false
# Off: a Service named cove would give the pod COVE_SERVICE_HOST, COVE_PORT…, which cove refuses
# as unknown COVE_ variables.
enableServiceLinks: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "cove.podMetadata" -}}
labels:
  {{- include "cove.selectorLabels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
  {{- with .Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Names, labels and the pieces every Herald container shares. */}}

{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.fullname" -}}
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

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "herald.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "herald.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The topics file every container reads (HERALD_TOPICS_FILE), and its ConfigMap's data:
     the repository's topics.yaml with the replication factor of the values. */}}
{{- define "herald.topicsPath" -}}/etc/herald/topics.yaml{{- end -}}

{{- define "herald.topicsData" -}}
topics.yaml: |
{{- $replication := printf "replication_factor: %d" (int .Values.topics.replicationFactor) }}
{{ regexReplaceAll "(?m)^replication_factor:.*$" (.Files.Get "files/topics.yaml") $replication | indent 2 }}
{{- end -}}

{{/* Partitions of `deliveries`: the most delivering processes that have work. */}}
{{- define "herald.deliveriesPartitions" -}}
{{- $topics := .Files.Get "files/topics.yaml" | fromYaml -}}
{{- index $topics.topics "deliveries" "partitions" | int -}}
{{- end -}}

{{/* secretKeyRef env entry: (list NAME REF) with REF {name, key, optional}. */}}
{{- define "herald.secretEnv" -}}
{{- $name := index . 0 -}}
{{- $ref := index . 1 -}}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secrets for %s need a Secret name" $name) $ref.name | quote }}
      key: {{ required (printf "secrets for %s need a key" $name) $ref.key | quote }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* The Deployments: the API and one per worker role; ingest only when enabled (it has
     sources to consume). A space-separated list (splitList " " to range over it). */}}
{{- define "herald.components" -}}
{{- $components := list "api" "router" "deliver" "index" -}}
{{- if .Values.ingest.enabled }}{{ $components = append $components "ingest" }}{{ end -}}
{{- join " " $components -}}
{{- end -}}

{{/* The environment of a Herald container: (dict "root" $ "component" NAME), NAME a role,
     "api" or "topics" (the topics Job). The chart's own settings, then the values'
     `settings` by field name. */}}
{{- define "herald.env" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $own := list "kafka_bootstrap" "database_url" "topics_file" "api_host" "api_port" "worker_host" "worker_port" "encryption_keys" "api_keys" "portal_signing_key" -}}
- name: HERALD_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" $values.kafka.bootstrap | quote }}
- name: HERALD_TOPICS_FILE
  value: {{ include "herald.topicsPath" $root | quote }}
{{- /* Each secret only where the code reads it: PostgreSQL in the API and the indexer, the
     encryption keys where destinations' credentials are sealed (API) or opened (deliver). */}}
{{- if has .component (list "api" "index") }}
{{ include "herald.secretEnv" (list "HERALD_DATABASE_URL" $values.secrets.databaseUrl) }}
{{- end }}
{{- if has .component (list "api" "deliver") }}
{{ include "herald.secretEnv" (list "HERALD_ENCRYPTION_KEYS" $values.secrets.encryptionKeys) }}
{{- end }}
{{- if eq .component "api" }}
- name: HERALD_API_HOST
  value: "0.0.0.0"
- name: HERALD_API_PORT
  value: {{ $values.ports.api | quote }}
{{ include "herald.secretEnv" (list "HERALD_API_KEYS" $values.secrets.apiKeys) }}
{{ include "herald.secretEnv" (list "HERALD_PORTAL_SIGNING_KEY" $values.secrets.portalSigningKey) }}
{{- else if ne .component "topics" }}
{{- if eq .component "ingest" }}
{{- /* The sources (their SASL passwords, AMQP URLs) and the configured keys (a tenant they
     name may be a record's tenant). */}}
{{ include "herald.secretEnv" (list "HERALD_SOURCES" $values.secrets.sources) }}
{{ include "herald.secretEnv" (list "HERALD_API_KEYS" $values.secrets.apiKeys) }}
{{- end }}
- name: HERALD_WORKER_HOST
  value: "0.0.0.0"
- name: HERALD_WORKER_PORT
  value: {{ $values.ports.worker | quote }}
{{- end }}
{{- range $field, $value := $values.settings }}
{{- if has $field $own }}
{{- fail (printf "settings.%s is set by the chart (see values.yaml)" $field) }}
{{- end }}
- name: {{ printf "HERALD_%s" (upper $field) }}
  {{- /* Not toString: values read from YAML are float64, which prints 1000000 as 1e+06;
       JSON prints numbers as pydantic parses them, and lists as pydantic-settings reads. */}}
  value: {{ if kindIs "string" $value }}{{ $value | quote }}{{ else }}{{ toJson $value | quote }}{{ end }}
{{- end }}
{{- range $name, $value := $values.otel }}
{{- if not (hasPrefix "OTEL_" $name) }}
{{- fail (printf "otel.%s: only OTEL_* variables go here" $name) }}
{{- end }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "herald.volumes" -}}
- name: topics
  configMap:
    name: {{ .configMap }}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "herald.volumeMounts" -}}
- name: topics
  mountPath: {{ include "herald.topicsPath" . | dir }}
  readOnly: true
- name: data
  mountPath: /app/.data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
The journey catalog (docs/deploy.md, 4a): where consumers and workers take the journeys from, and
the seed Job that publishes the mounted journeys to the catalog topic.
*/}}

{{/* Catalog settings of the consumer and the worker; nothing in files mode (the default). */}}
{{- define "eventflow.catalogEnv" -}}
{{- if eq .Values.catalog.source "kafka" }}
- name: EVENTFLOW_CATALOG_SOURCE
  value: kafka
- name: EVENTFLOW_CATALOG_TOPIC
  value: {{ .Values.catalog.topic | quote }}
- name: EVENTFLOW_CATALOG_STARTUP_TIMEOUT_SECONDS
  value: {{ .Values.catalog.startupTimeoutSeconds | quote }}
{{- include "eventflow.catalogSigningEnv" . }}
{{- end }}
{{- end }}

{{/*
Who may publish (docs/deploy.md, 4a): the signing keys from their Secret, or, in devMode only and
without a Secret, unsigned entries accepted. `eventflow.validateCatalog` refuses anything else.
*/}}
{{- define "eventflow.catalogSigningEnv" -}}
{{- with .Values.catalog.signing }}
{{- if .secretName }}
- name: EVENTFLOW_CATALOG_SIGNING_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .secretName | quote }}
      key: {{ .key | quote }}
{{- if .signingKeyId }}
- name: EVENTFLOW_CATALOG_SIGNING_KEY_ID
  value: {{ .signingKeyId | quote }}
{{- end }}
{{- else if $.Values.devMode }}
- name: EVENTFLOW_CATALOG_ALLOW_UNSIGNED
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{/* Mounts and volumes of every journeys file a pod reads: definitions, templates, sources, segments, topics. */}}
{{- define "eventflow.journeysMounts" -}}
{{- if include "eventflow.journeysMounted" . }}
- name: journey-definitions
  mountPath: /etc/eventflow/journeys/definitions
  readOnly: true
- name: journey-templates
  mountPath: /etc/eventflow/journeys/templates
  readOnly: true
{{- include "eventflow.sourcesMounts" . }}
{{- include "eventflow.audiencesMounts" . }}
{{- end }}
{{- end }}

{{- define "eventflow.journeysVolumes" -}}
{{- if include "eventflow.journeysMounted" . }}
- name: journey-definitions
  configMap:
    name: {{ include "eventflow.definitionsConfigMap" . }}
- name: journey-templates
  configMap:
    name: {{ include "eventflow.templatesConfigMap" . }}
{{- include "eventflow.sourcesVolume" . }}
{{- include "eventflow.audiencesVolumes" . }}
{{- end }}
{{- end }}

{{- define "eventflow.validateCatalog" -}}
{{- if and .Values.catalog.seedJob.enabled (not (include "eventflow.journeysMounted" .)) }}
{{- fail "catalog.seedJob.enabled needs journeys to publish: set journeys.definitions and journeys.templates (or the existing ConfigMaps)" }}
{{- end }}
{{- if and (or (eq .Values.catalog.source "kafka") .Values.catalog.seedJob.enabled) (not .Values.catalog.signing.secretName) (not .Values.devMode) }}
{{- fail "catalog.signing.secretName is required with catalog.source kafka or catalog.seedJob outside devMode: consumers and workers route by whatever is on the catalog topic, so they trust only entries signed with these keys (docs/deploy.md, 4a)" }}
{{- end }}
{{- range $key, $_ := merge (deepCopy .Values.catalog.seedJob.kafkaConfig) .Values.catalog.seedJob.kafkaSecretConfig }}
{{- if contains "_" $key }}
{{- fail (printf "librdkafka key %q contains '_': Eventflow maps EVENTFLOW_LIBRDKAFKA_A_B to a.b, so it cannot be passed" $key) }}
{{- end }}
{{- end }}
{{- range $key, $_ := .Values.catalog.seedJob.kafkaConfig }}
{{- if regexMatch "(password|secret|\\.pem$)" $key }}
{{- fail (printf "catalog.seedJob.kafkaConfig.%s looks like a secret: reference a Secret under catalog.seedJob.kafkaSecretConfig instead" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Schema registry settings (as in eventflow.env): publish validates sources that name registry subjects. */}}
{{- define "eventflow.registryEnv" -}}
{{- with .Values.schemaRegistry }}
{{- if .url }}
- name: EVENTFLOW_SCHEMA_REGISTRY_URL
  value: {{ .url | quote }}
- name: EVENTFLOW_SCHEMA_REGISTRY_TIMEOUT_SECONDS
  value: {{ .timeoutSeconds | quote }}
- name: EVENTFLOW_SUBJECT_NAME_STRATEGY
  value: {{ .subjectNameStrategy | quote }}
{{- range $name, $ref := dict "EVENTFLOW_SCHEMA_REGISTRY_USERNAME" .username "EVENTFLOW_SCHEMA_REGISTRY_PASSWORD" .password }}
{{- if $ref.secretName }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName | quote }}
      key: {{ $ref.key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The seed Job's Kafka settings: the release's, with the publisher identity's overriding them
(only the publisher may write the catalog topic).
*/}}
{{- define "eventflow.catalogSeedKafkaEnv" -}}
{{- $job := .Values.catalog.seedJob }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
{{- $secretKeys := keys $job.kafkaSecretConfig }}
{{- range $key, $value := merge (deepCopy $job.kafkaConfig) .Values.kafka.config }}
{{- if not (has $key $secretKeys) }}
- name: EVENTFLOW_LIBRDKAFKA_{{ $key | upper | replace "." "_" }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- $plainKeys := keys $job.kafkaConfig }}
{{- range $key, $ref := merge (deepCopy $job.kafkaSecretConfig) .Values.kafka.secretConfig }}
{{- if not (and (has $key $plainKeys) (not (hasKey $job.kafkaSecretConfig $key))) }}
- name: EVENTFLOW_LIBRDKAFKA_{{ $key | upper | replace "." "_" }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secretName is required for librdkafka key %s" $key) $ref.secretName | quote }}
      key: {{ required (printf "key is required for librdkafka key %s" $key) $ref.key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
One step of the catalog seed Job: `eventflow <command> publish /etc/eventflow/journeys` (command:
journeys or segments) with the publisher's Kafka identity, the signing keys and the mounted
journeys folder. Takes (dict "root" . "name" NAME "command" COMMAND).
*/}}
{{- define "eventflow.catalogSeedContainer" -}}
{{- $root := .root }}
- name: {{ .name }}
  image: {{ include "eventflow.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["eventflow"]
  args:
    - {{ .command }}
    - publish
    - /etc/eventflow/journeys
    - --author
    - {{ $root.Values.catalog.seedJob.author | quote }}
    - --message
    - {{ printf "helm %s of release %s, revision %d, chart %s" (ternary "install" "upgrade" $root.Release.IsInstall) $root.Release.Name (int $root.Release.Revision) $root.Chart.Version | quote }}
  env:
    {{- include "eventflow.catalogSeedKafkaEnv" $root | trim | nindent 4 }}
    {{- include "eventflow.registryEnv" $root | nindent 4 }}
    - name: EVENTFLOW_CATALOG_TOPIC
      value: {{ $root.Values.catalog.topic | quote }}
    {{- include "eventflow.catalogSigningEnv" $root | nindent 4 }}
    - name: EVENTFLOW_JOURNEYS_DIR
      value: /etc/eventflow/journeys
    - name: EVENTFLOW_LOG_FORMAT
      value: {{ $root.Values.logFormat | quote }}
    - name: EVENTFLOW_CACHE_DIR
      value: /tmp/eventflow
    {{- include "eventflow.channelProvidersEnv" $root | nindent 4 }}
  resources:
    requests:
      cpu: 50m
      memory: 128Mi
    limits:
      memory: 256Mi
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- include "eventflow.journeysMounts" $root | nindent 4 }}
    {{- if $root.Values.kafka.tlsSecretName }}
    - name: kafka-tls
      mountPath: /etc/eventflow/kafka-tls
      readOnly: true
    {{- end }}
{{- end }}

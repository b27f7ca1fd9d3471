{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "eventflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release plus chart name unless the release already contains it. */}}
{{- define "eventflow.fullname" -}}
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

{{- define "eventflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "eventflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "eventflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "consumer"). */}}
{{- define "eventflow.componentSelectorLabels" -}}
{{ include "eventflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "eventflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "eventflow.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}
{{- end }}

{{/* True when the chart itself ships the journeys ConfigMaps. */}}
{{- define "eventflow.journeysFromValues" -}}
{{- if or .Values.journeys.definitions .Values.journeys.templates }}true{{ end }}
{{- end }}

{{/* True when any journeys ConfigMap (chart-made or external) is mounted. */}}
{{- define "eventflow.journeysMounted" -}}
{{- if or (include "eventflow.journeysFromValues" .) .Values.journeys.existingDefinitionsConfigMap .Values.journeys.existingTemplatesConfigMap }}true{{ end }}
{{- end }}

{{- define "eventflow.definitionsConfigMap" -}}
{{- default (printf "%s-journey-definitions" (include "eventflow.fullname" .)) .Values.journeys.existingDefinitionsConfigMap }}
{{- end }}

{{- define "eventflow.templatesConfigMap" -}}
{{- default (printf "%s-journey-templates" (include "eventflow.fullname" .)) .Values.journeys.existingTemplatesConfigMap }}
{{- end }}

{{/*
Checksum of the journeys a pod mounts, so changing them rolls the pods. Chart-made ConfigMaps are
hashed from the rendered template; external ones are looked up in the cluster at install/upgrade
time (`helm template` cannot see the cluster, so there it hashes the names only).
*/}}
{{- define "eventflow.journeysChecksum" -}}
{{- if include "eventflow.journeysFromValues" . }}
{{- include (print .Template.BasePath "/journeys-configmaps.yaml") . | sha256sum }}
{{- else }}
{{- $defs := lookup "v1" "ConfigMap" .Release.Namespace (include "eventflow.definitionsConfigMap" .) }}
{{- $tmpls := lookup "v1" "ConfigMap" .Release.Namespace (include "eventflow.templatesConfigMap" .) }}
{{- list (include "eventflow.definitionsConfigMap" .) (include "eventflow.templatesConfigMap" .) ($defs.data | default dict) ($tmpls.data | default dict) | toJson | sha256sum }}
{{- end }}
{{- end }}

{{/* The journeys checksum, extended with the sources, segments and topics ConfigMaps when the chart ships them. */}}
{{- define "eventflow.journeysAndSourcesChecksum" -}}
{{- $checksum := include "eventflow.journeysChecksum" . }}
{{- if include "eventflow.sourcesFromValues" . }}
{{- $checksum = printf "%s\n%s" $checksum (include (print .Template.BasePath "/journeys-sources-configmap.yaml") .) | sha256sum }}
{{- end }}
{{- if or .Values.journeys.audiences .Values.journeys.topics }}
{{- $checksum = printf "%s\n%s" $checksum (include (print .Template.BasePath "/journeys-audiences-configmap.yaml") .) | sha256sum }}
{{- else if .Values.journeys.existingAudiencesConfigMap }}
{{- $audiences := lookup "v1" "ConfigMap" .Release.Namespace .Values.journeys.existingAudiencesConfigMap }}
{{- $checksum = list $checksum .Values.journeys.existingAudiencesConfigMap ($audiences.data | default dict) | toJson | sha256sum }}
{{- end }}
{{- $checksum }}
{{- end }}

{{/* Refuses configurations that would put a secret in plain text or cannot work. */}}
{{- define "eventflow.validate" -}}
{{- range $key, $_ := .Values.kafka.config }}
{{- if regexMatch "(password|secret|\\.pem$)" $key }}
{{- fail (printf "kafka.config.%s looks like a secret: reference a Secret under kafka.secretConfig instead" $key) }}
{{- end }}
{{- end }}
{{- range $key, $_ := merge (deepCopy .Values.kafka.config) .Values.kafka.secretConfig }}
{{- if contains "_" $key }}
{{- fail (printf "librdkafka key %q contains '_': Eventflow maps EVENTFLOW_LIBRDKAFKA_A_B to a.b, so it cannot be passed" $key) }}
{{- end }}
{{- end }}
{{- if and (include "eventflow.journeysMounted" .) (not (and (or .Values.journeys.definitions .Values.journeys.existingDefinitionsConfigMap) (or .Values.journeys.templates .Values.journeys.existingTemplatesConfigMap))) }}
{{- fail "journeys: give both definitions and templates (values or existing ConfigMaps); the loader reads definitions/ and templates/ from one folder" }}
{{- end }}
{{- if and (include "eventflow.journeysFromValues" .) (or .Values.journeys.existingDefinitionsConfigMap .Values.journeys.existingTemplatesConfigMap) }}
{{- fail "journeys: use either inline definitions/templates or existing ConfigMaps, not both" }}
{{- end }}
{{- include "eventflow.validateSources" . }}
{{- if not (or .Values.devMode .Values.payloadEncryption.secretName .Values.payloadEncryption.allowPlaintext) }}
{{- fail "payloadEncryption.secretName is required outside devMode: without keys, contact details are stored in clear in Temporal (docs/deploy.md); set payloadEncryption.allowPlaintext=true to accept that" }}
{{- end }}
{{- if not (or .Values.devMode .Values.addressHashing.secretName .Values.addressHashing.allowUnkeyed) }}
{{- fail "addressHashing.secretName is required outside devMode: unkeyed address hashes can be guessed back into phone numbers (docs/deploy.md, section 10); set addressHashing.allowUnkeyed=true to accept that" }}
{{- end }}
{{- if and .Values.codecServer.enabled (not .Values.payloadEncryption.secretName) }}
{{- fail "codecServer.enabled needs payloadEncryption.secretName: the codec server decrypts with those keys" }}
{{- end }}
{{- if le (int .Values.consumer.terminationGracePeriodSeconds) (int .Values.consumer.shutdownGraceSeconds) }}
{{- fail "consumer.terminationGracePeriodSeconds must exceed consumer.shutdownGraceSeconds, or pods are killed mid-drain" }}
{{- end }}
{{- end }}

{{/* Environment shared by the consumer, the worker and the webhooks. */}}
{{- define "eventflow.env" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: EVENTFLOW_TOPICS
  value: {{ join "," .Values.kafka.topics | quote }}
- name: EVENTFLOW_CONSUMER_GROUP
  value: {{ .Values.kafka.consumerGroup | quote }}
- name: EVENTFLOW_DLQ_TOPIC
  value: {{ .Values.kafka.dlqTopic | quote }}
{{- range $key, $value := .Values.kafka.config }}
- name: EVENTFLOW_LIBRDKAFKA_{{ $key | upper | replace "." "_" }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $key, $ref := .Values.kafka.secretConfig }}
- name: EVENTFLOW_LIBRDKAFKA_{{ $key | upper | replace "." "_" }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "kafka.secretConfig.%s.secretName is required" $key) $ref.secretName | quote }}
      key: {{ required (printf "kafka.secretConfig.%s.key is required" $key) $ref.key | quote }}
{{- end }}
{{- with .Values.kafka.topicEncodings }}
- name: EVENTFLOW_TOPIC_ENCODINGS
  value: {{ include "eventflow.pairs" . | quote }}
{{- end }}
- name: EVENTFLOW_DEFAULT_ENCODING
  value: {{ .Values.kafka.defaultEncoding | quote }}
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
- name: TEMPORAL_ADDRESS
  value: {{ .Values.temporal.address | quote }}
- name: TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
- name: EVENTFLOW_TASK_QUEUE
  value: {{ .Values.temporal.taskQueue | quote }}
{{- with .Values.temporal.apiKey.secretName }}
- name: TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.temporal.apiKey.key | quote }}
{{- end }}
{{- with .Values.temporal.tls }}
{{- if .secretName }}
{{- if .caFile }}
- name: TEMPORAL_TLS_CA
  value: /etc/eventflow/temporal-tls/{{ .caFile }}
{{- end }}
{{- if .certFile }}
- name: TEMPORAL_TLS_CERT
  value: /etc/eventflow/temporal-tls/{{ .certFile }}
- name: TEMPORAL_TLS_KEY
  value: /etc/eventflow/temporal-tls/{{ required "temporal.tls.keyFile is required with certFile" .keyFile }}
{{- end }}
{{- end }}
{{- end }}
{{- include "eventflow.payloadKeysEnv" . }}
{{- include "eventflow.addressKeysEnv" . }}
{{- include "eventflow.processDatabaseEnv" . }}
- name: EVENTFLOW_METRICS_PORT
  value: {{ .Values.metricsPort | quote }}
- name: EVENTFLOW_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: EVENTFLOW_CACHE_DIR
  value: /tmp/eventflow
{{- with .Values.tracing }}
{{- if .otlpEndpoint }}
- name: EVENTFLOW_OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: EVENTFLOW_TRACE_SAMPLE_RATIO
  value: {{ .sampleRatio | toString | quote }}
{{- if .headers.secretName }}
- name: EVENTFLOW_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .headers.secretName | quote }}
      key: {{ .headers.key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "eventflow.journeysMounted" . }}
- name: EVENTFLOW_JOURNEYS_DIR
  value: /etc/eventflow/journeys
{{- end }}
{{- include "eventflow.catalogEnv" . }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Which provider serves each channel, and development mode: names only, no secrets. The worker
sends with them; the consumer and the catalog seed job refuse catalog journeys on a channel no
provider serves (fail closed outside devMode).
*/}}
{{- define "eventflow.channelProvidersEnv" -}}
{{- $p := .Values.providers }}
{{- $email := $p.email.providers | default (list (required "providers.email.provider is required: sendgrid, smtp, or outbox (a local file) with devMode: true for a trial" $p.email.provider)) }}
{{- if and $p.email.provider (ne $p.email.provider (first $email)) }}
{{- fail (printf "providers.email.provider (%s) must be the first of providers.email.providers (%s), or left empty" $p.email.provider (join "," $email)) }}
{{- end }}
{{- if and (gt (len $email) 1) (not (and (include "eventflow.databaseConfigured" .) .Values.database.connectProcesses)) }}
{{- fail "providers.email.providers lists several providers: failover needs the customer store (database.existingSecret with connectProcesses), which records each call's provider before it leaves" }}
{{- end }}
{{- with $p.email.provider }}
- name: EVENTFLOW_EMAIL_PROVIDER
  value: {{ . | quote }}
{{- end }}
{{- with $p.email.providers }}
- name: EVENTFLOW_EMAIL_PROVIDERS
  value: {{ join "," . | quote }}
{{- end }}
- name: EVENTFLOW_SMS_PROVIDER
  value: {{ required "providers.sms.provider is required: twilio, or outbox (a local file) with devMode: true for a trial" $p.sms.provider | quote }}
- name: EVENTFLOW_WHATSAPP_PROVIDER
  value: {{ required "providers.whatsapp.provider is required: twilio, or outbox (a local file) with devMode: true for a trial" $p.whatsapp.provider | quote }}
- name: EVENTFLOW_PUSH_PROVIDER
  value: {{ $p.push.provider | quote }}
- name: EVENTFLOW_WEBPUSH_PROVIDER
  value: {{ $p.webpush.provider | quote }}
{{- if .Values.devMode }}
- name: EVENTFLOW_DEV_MODE
  value: "true"
{{- end }}
{{- end }}

{{/* Consumer-only environment. */}}
{{- define "eventflow.consumerEnv" -}}
- name: EVENTFLOW_MAX_IN_FLIGHT
  value: {{ .Values.consumer.maxInFlight | quote }}
- name: EVENTFLOW_SHUTDOWN_GRACE_SECONDS
  value: {{ .Values.consumer.shutdownGraceSeconds | quote }}
{{ include "eventflow.channelProvidersEnv" . }}
{{- end }}

{{/*
Worker-only environment: only the worker reads these (the README's "Read by" column), and the
provider secrets have no business in the consumer's pods.
*/}}
{{- define "eventflow.workerEnv" -}}
{{- $p := .Values.providers }}
{{- $email := $p.email.providers | default (list $p.email.provider) }}
- name: EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES
  value: {{ .Values.worker.maxConcurrentActivities | quote }}
- name: EVENTFLOW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS
  value: {{ .Values.worker.maxConcurrentWorkflowTasks | quote }}
- name: EVENTFLOW_WORKER_WORKFLOW_TASK_POLLERS
  value: {{ .Values.worker.workflowTaskPollers | quote }}
- name: EVENTFLOW_WORKER_ACTIVITY_TASK_POLLERS
  value: {{ .Values.worker.activityTaskPollers | quote }}
- name: EVENTFLOW_WORKER_WORKFLOW_SANDBOX
  value: {{ .Values.worker.workflowSandbox | quote }}
{{ include "eventflow.channelProvidersEnv" . }}
- name: EVENTFLOW_PROVIDER_TIMEOUT_SECONDS
  value: {{ $p.timeoutSeconds | toString | quote }}
- name: EVENTFLOW_PROVIDER_CIRCUIT_FAILURES
  value: {{ $p.circuitBreaker.failures | int | quote }}
- name: EVENTFLOW_PROVIDER_CIRCUIT_OPEN_SECONDS
  value: {{ $p.circuitBreaker.openSeconds | toString | quote }}
{{- range $name, $value := dict "EVENTFLOW_EMAIL_FROM" $p.email.from "EVENTFLOW_EMAIL_FROM_NAME" $p.email.fromName "EVENTFLOW_SMS_FROM" $p.sms.from "EVENTFLOW_WHATSAPP_FROM" $p.whatsapp.from "TWILIO_ACCOUNT_SID" $p.twilio.accountSid "EVENTFLOW_TWILIO_MESSAGING_SERVICE_SID" $p.twilio.messagingServiceSid }}
{{- if $value }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- if has "sendgrid" $email }}
- name: SENDGRID_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "providers.sendgrid.apiKey.secretName is required when email uses sendgrid" $p.sendgrid.apiKey.secretName | quote }}
      key: {{ $p.sendgrid.apiKey.key | quote }}
{{- end }}
{{- if has "smtp" $email }}
- name: EVENTFLOW_SMTP_HOST
  value: {{ required "providers.smtp.host is required when email uses smtp" $p.smtp.host | quote }}
- name: EVENTFLOW_SMTP_PORT
  value: {{ $p.smtp.port | int | quote }}
- name: EVENTFLOW_SMTP_SECURITY
  value: {{ $p.smtp.security | quote }}
- name: EVENTFLOW_SMTP_RATE_PER_SECOND
  value: {{ $p.smtp.ratePerSecond | toString | quote }}
{{- with $p.smtp.credentials }}
{{- if .secretName }}
- name: EVENTFLOW_SMTP_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .secretName | quote }}
      key: {{ .usernameKey | quote }}
- name: EVENTFLOW_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secretName | quote }}
      key: {{ .passwordKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if or (eq $p.sms.provider "twilio") (eq $p.whatsapp.provider "twilio") }}
- name: TWILIO_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ required "providers.twilio.authToken.secretName is required when a channel uses twilio" $p.twilio.authToken.secretName | quote }}
      key: {{ $p.twilio.authToken.key | quote }}
{{- end }}
{{- if eq $p.push.provider "fcm" }}
{{- $_ := required "providers.fcm.serviceAccount.secretName is required when providers.push.provider is fcm" $p.fcm.serviceAccount.secretName }}
- name: EVENTFLOW_FCM_SERVICE_ACCOUNT_FILE
  value: /etc/eventflow/fcm/service-account.json
{{- with $p.fcm.projectId }}
- name: EVENTFLOW_FCM_PROJECT_ID
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq $p.webpush.provider "webpush" }}
{{- $_ := required "providers.vapid.privateKey.secretName is required when providers.webpush.provider is webpush" $p.vapid.privateKey.secretName }}
- name: EVENTFLOW_VAPID_PRIVATE_KEY_FILE
  value: /etc/eventflow/vapid/private-key.pem
- name: EVENTFLOW_VAPID_SUBJECT
  value: {{ required "providers.vapid.subject is required when providers.webpush.provider is webpush: push services contact it" $p.vapid.subject | quote }}
{{- end }}
{{- include "eventflow.webhooksWorkerEnv" . }}
{{- include "eventflow.preferencesWorkerEnv" . }}
{{- range $name, $value := .Values.worker.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range .Values.worker.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName | quote }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}

{{/* A map as `key=value,key=value` (sorted), the form EVENTFLOW_TOPIC_ENCODINGS takes. */}}
{{- define "eventflow.pairs" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}{{ $pairs = append $pairs (printf "%s=%s" $key $value) }}{{ end }}
{{- join "," $pairs }}
{{- end }}

{{/*
Payload encryption (consumer, worker, codec server): the keys Secret as a file, the encrypting
key's id, and, outside devMode, a process refuses to start without keys.
*/}}
{{- define "eventflow.payloadKeysEnv" -}}
{{- with .Values.payloadEncryption }}
{{- if .secretName }}
- name: EVENTFLOW_PAYLOAD_KEYS_FILE
  value: /etc/eventflow/payload-keys/{{ .key }}
{{- if .encryptKeyId }}
- name: EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID
  value: {{ .encryptKeyId | quote }}
{{- end }}
{{- end }}
{{- if not (or $.Values.devMode .allowPlaintext) }}
- name: EVENTFLOW_PAYLOAD_KEYS_REQUIRED
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{/*
Address hash keys (consumer, worker, webhooks): the keys Secret as a file, the writing key's id,
legacy reads, and, outside devMode, a process refuses to start without keys.
*/}}
{{- define "eventflow.addressKeysEnv" -}}
{{- with .Values.addressHashing }}
{{- if .secretName }}
- name: EVENTFLOW_ADDRESS_HASH_KEYS_FILE
  value: /etc/eventflow/address-keys/{{ .key }}
{{- if .keyId }}
- name: EVENTFLOW_ADDRESS_HASH_KEY_ID
  value: {{ .keyId | quote }}
{{- end }}
{{- end }}
{{- if not .legacyReads }}
- name: EVENTFLOW_ADDRESS_HASH_LEGACY_READS
  value: "false"
{{- end }}
{{- if not (or $.Values.devMode .allowUnkeyed) }}
- name: EVENTFLOW_ADDRESS_HASH_KEYS_REQUIRED
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{/* The address keys Secret's volume and mount, named address-keys. */}}
{{- define "eventflow.addressKeysMount" -}}
{{- if .Values.addressHashing.secretName }}
- name: address-keys
  mountPath: /etc/eventflow/address-keys
  readOnly: true
{{- end }}
{{- end }}

{{- define "eventflow.addressKeysVolume" -}}
{{- with .Values.addressHashing.secretName }}
- name: address-keys
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* The payload keys Secret's volume and mount, named payload-keys. */}}
{{- define "eventflow.payloadKeysMount" -}}
{{- if .Values.payloadEncryption.secretName }}
- name: payload-keys
  mountPath: /etc/eventflow/payload-keys
  readOnly: true
{{- end }}
{{- end }}

{{- define "eventflow.payloadKeysVolume" -}}
{{- with .Values.payloadEncryption.secretName }}
- name: payload-keys
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/*
Secrets a component reads as files, by component: the worker's push provider keys (FCM service
account, VAPID key), the webhooks' device API tokens. Each mounts only its key, read-only.
Call with (dict "root" $ "component" "worker").
*/}}
{{- define "eventflow.componentSecretFiles" -}}
{{- $p := .root.Values.providers }}
{{- $files := list }}
{{- if and (eq .component "worker") (eq $p.push.provider "fcm") }}
{{- $files = append $files (dict "name" "fcm" "secretName" $p.fcm.serviceAccount.secretName "key" $p.fcm.serviceAccount.key "path" "service-account.json") }}
{{- end }}
{{- if and (eq .component "worker") (eq $p.webpush.provider "webpush") }}
{{- $files = append $files (dict "name" "vapid" "secretName" $p.vapid.privateKey.secretName "key" $p.vapid.privateKey.key "path" "private-key.pem") }}
{{- end }}
{{- if and (eq .component "webhooks") .root.Values.webhooks.deviceApi.tokens.secretName }}
{{- $files = append $files (dict "name" "device-api" "secretName" .root.Values.webhooks.deviceApi.tokens.secretName "key" .root.Values.webhooks.deviceApi.tokens.key "path" "tokens") }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{- define "eventflow.componentSecretMounts" -}}
{{- range (include "eventflow.componentSecretFiles" . | fromJsonArray) }}
- name: {{ .name }}
  mountPath: /etc/eventflow/{{ .name }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "eventflow.componentSecretVolumes" -}}
{{- range (include "eventflow.componentSecretFiles" . | fromJsonArray) }}
- name: {{ .name }}
  secret:
    secretName: {{ .secretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ .key | quote }}
        path: {{ .path }}
{{- end }}
{{- end }}

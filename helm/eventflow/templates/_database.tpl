{{/*
The customer store (docs/deploy.md, "Customer store (PostgreSQL)"). The DSN holds a password, so it
never becomes a value: the existing Secret's one key is mounted as a file (`/etc/eventflow/database/url`)
and read through EVENTFLOW_DATABASE_URL_FILE. TLS: libpq's sslmode and sslrootcert, in the DSN or,
when it names none, PGSSLMODE and PGSSLROOTCERT (asyncpg reads both), the CA from its own Secret.
*/}}

{{/* True when the chart has a customer store to give to processes and Jobs. */}}
{{- define "eventflow.databaseConfigured" -}}
{{- if .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{/*
The store's environment. Call with (dict "root" $ "url" true); "url" false leaves out
EVENTFLOW_DATABASE_URL_FILE (database.connectProcesses=false: the Secret is mounted, unused).
*/}}
{{- define "eventflow.databaseEnv" -}}
{{- $d := .root.Values.database }}
{{- if $d.existingSecret }}
{{- if .url }}
- name: EVENTFLOW_DATABASE_URL_FILE
  value: /etc/eventflow/database/url
{{- end }}
- name: EVENTFLOW_DATABASE_POOL_MIN_SIZE
  value: {{ $d.poolMinSize | int | quote }}
- name: EVENTFLOW_DATABASE_POOL_MAX_SIZE
  value: {{ $d.poolMaxSize | int | quote }}
- name: EVENTFLOW_DATABASE_STATEMENT_TIMEOUT_SECONDS
  value: {{ $d.statementTimeoutSeconds | toString | quote }}
{{- with $d.tls.sslMode }}
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if $d.tls.caSecretName }}
- name: PGSSLROOTCERT
  value: /etc/eventflow/database-tls/ca.crt
{{- end }}
{{- end }}
{{- end }}

{{/* The environment of the consumer, the worker and the webhooks. */}}
{{- define "eventflow.processDatabaseEnv" -}}
{{- include "eventflow.databaseEnv" (dict "root" . "url" .Values.database.connectProcesses) }}
{{- end }}

{{- define "eventflow.databaseMounts" -}}
{{- if .Values.database.existingSecret }}
- name: database
  mountPath: /etc/eventflow/database
  readOnly: true
{{- if .Values.database.tls.caSecretName }}
- name: database-tls
  mountPath: /etc/eventflow/database-tls
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* Only the DSN's key is mounted: an operator's Secret (CloudNativePG's) holds more than the DSN. */}}
{{- define "eventflow.databaseVolumes" -}}
{{- with .Values.database }}
{{- if .existingSecret }}
- name: database
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ required "database.key is required: the key of database.existingSecret holding the DSN" .key | quote }}
        path: url
{{- if .tls.caSecretName }}
- name: database-tls
  secret:
    secretName: {{ .tls.caSecretName }}
    defaultMode: 0440
    items:
      - key: {{ .tls.caKey | quote }}
        path: ca.crt
{{- end }}
{{- end }}
{{- end }}
{{- end }}

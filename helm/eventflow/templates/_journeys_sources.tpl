{{/*
Event sources (`sources.yaml`) and the schema files it names, shipped beside the journeys. A
ConfigMap key cannot hold `/`, so each file's path relative to the journeys folder is flattened
into its key (`/` -> `__`) and the file is mounted back at that path with `subPath`: the pods see
`/etc/eventflow/journeys/sources.yaml` and `/etc/eventflow/journeys/schemas/...` exactly as in a
journeys folder, next to the definitions/ and templates/ mounts.
*/}}

{{/* True when the chart ships a source file or source schema files. */}}
{{- define "eventflow.sourcesFromValues" -}}
{{- if or .Values.journeys.sources .Values.journeys.sourceSchemas }}true{{ end }}
{{- end }}

{{- define "eventflow.sourcesConfigMap" -}}
{{- printf "%s-journey-sources" (include "eventflow.fullname" .) }}
{{- end }}

{{/* The ConfigMap key of one source schema file, from its relative path. */}}
{{- define "eventflow.sourceSchemaKey" -}}
{{- replace "/" "__" . }}
{{- end }}

{{/* Volume mounts of the source file and schemas (inside a container's volumeMounts). */}}
{{- define "eventflow.sourcesMounts" -}}
{{- if include "eventflow.sourcesFromValues" . }}
{{- if .Values.journeys.sources }}
- name: journey-sources
  mountPath: /etc/eventflow/journeys/sources.yaml
  subPath: sources.yaml
  readOnly: true
{{- end }}
{{- range $path, $_ := .Values.journeys.sourceSchemas }}
- name: journey-sources
  mountPath: /etc/eventflow/journeys/{{ $path }}
  subPath: {{ include "eventflow.sourceSchemaKey" $path }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "eventflow.sourcesVolume" -}}
{{- if include "eventflow.sourcesFromValues" . }}
- name: journey-sources
  configMap:
    name: {{ include "eventflow.sourcesConfigMap" . }}
{{- end }}
{{- end }}

{{/* Refuses source files that cannot be mounted where the loader reads them. */}}
{{- define "eventflow.validateSources" -}}
{{- if include "eventflow.sourcesFromValues" . }}
{{- if not (include "eventflow.journeysMounted" .) }}
{{- fail "journeys.sources needs journeys.definitions and journeys.templates (or the existing ConfigMaps): the source file is read from the mounted journeys folder" }}
{{- end }}
{{- if and .Values.journeys.sourceSchemas (not .Values.journeys.sources) }}
{{- fail "journeys.sourceSchemas needs journeys.sources: only the source file names schema files" }}
{{- end }}
{{- $keys := dict }}
{{- range $path, $_ := .Values.journeys.sourceSchemas }}
{{- if not (regexMatch "^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$" $path) }}
{{- fail (printf "journeys.sourceSchemas: %q must be a relative path of letters, digits, '.', '_', '-' and '/'" $path) }}
{{- end }}
{{- range splitList "/" $path }}
{{- if or (eq . ".") (eq . "..") }}
{{- fail (printf "journeys.sourceSchemas: %q may not contain '.' or '..' segments" $path) }}
{{- end }}
{{- end }}
{{- if or (eq $path "sources.yaml") (hasPrefix "definitions/" $path) (hasPrefix "templates/" $path) }}
{{- fail (printf "journeys.sourceSchemas: %q would hide sources.yaml or land in definitions/ or templates/" $path) }}
{{- end }}
{{- $key := include "eventflow.sourceSchemaKey" $path }}
{{- if or (hasKey $keys $key) (eq $key "sources.yaml") }}
{{- fail (printf "journeys.sourceSchemas: %q and %q flatten to the same ConfigMap key %q" (get $keys $key | default "sources.yaml") $path $key) }}
{{- end }}
{{- if gt (len $key) 253 }}
{{- fail (printf "journeys.sourceSchemas: %q is longer than a ConfigMap key may be (253)" $path) }}
{{- end }}
{{- $_ := set $keys $key $path }}
{{- end }}
{{- end }}
{{- end }}

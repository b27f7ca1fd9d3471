{{/*
Segments (`audiences/`) and subscription topics (`topics.yaml`) shipped beside the journeys. The
segment files are one ConfigMap mounted as the journeys folder's audiences/ (consumers in files
mode evaluate them, the catalog seed Job publishes them); the topics file is one key mounted with
`subPath` at topics.yaml, where the worker, the consumer, the preference center and both publish
commands read it.
*/}}

{{/* True when the chart ships segment files, or mounts an external ConfigMap of them. */}}
{{- define "eventflow.audiencesMounted" -}}
{{- if or .Values.journeys.audiences .Values.journeys.existingAudiencesConfigMap }}true{{ end }}
{{- end }}

{{- define "eventflow.audiencesConfigMap" -}}
{{- default (printf "%s-journey-audiences" (include "eventflow.fullname" .)) .Values.journeys.existingAudiencesConfigMap }}
{{- end }}

{{- define "eventflow.topicsConfigMap" -}}
{{- printf "%s-journey-topics" (include "eventflow.fullname" .) }}
{{- end }}

{{/* Volume mounts of the segment files and the topics file (inside a container's volumeMounts). */}}
{{- define "eventflow.audiencesMounts" -}}
{{- if include "eventflow.audiencesMounted" . }}
- name: journey-audiences
  mountPath: /etc/eventflow/journeys/audiences
  readOnly: true
{{- end }}
{{- if .Values.journeys.topics }}
- name: journey-topics
  mountPath: /etc/eventflow/journeys/topics.yaml
  subPath: topics.yaml
  readOnly: true
{{- end }}
{{- end }}

{{- define "eventflow.audiencesVolumes" -}}
{{- if include "eventflow.audiencesMounted" . }}
- name: journey-audiences
  configMap:
    name: {{ include "eventflow.audiencesConfigMap" . }}
{{- end }}
{{- if .Values.journeys.topics }}
- name: journey-topics
  configMap:
    name: {{ include "eventflow.topicsConfigMap" . }}
{{- end }}
{{- end }}

{{/* Refuses segment and topic files that cannot be mounted where the loader reads them. */}}
{{- define "eventflow.validateAudiences" -}}
{{- if and (or (include "eventflow.audiencesMounted" .) .Values.journeys.topics) (not (include "eventflow.journeysMounted" .)) }}
{{- fail "journeys.audiences and journeys.topics need journeys.definitions and journeys.templates (or the existing ConfigMaps): they are read from the mounted journeys folder" }}
{{- end }}
{{- if and .Values.journeys.audiences .Values.journeys.existingAudiencesConfigMap }}
{{- fail "journeys: use either inline audiences or existingAudiencesConfigMap, not both" }}
{{- end }}
{{- range $name, $_ := .Values.journeys.audiences }}
{{- if not (regexMatch "^[a-z][a-z0-9_]{0,62}(\\.yaml)?$" $name) }}
{{- fail (printf "journeys.audiences: %q must be a segment id (lower-case letters, digits and _, a letter first) or attributes" $name) }}
{{- end }}
{{- end }}
{{- end }}

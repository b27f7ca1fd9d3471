{{/* The link settings the worker and the preference center share: the public URL and the signing keys. */}}
{{- define "eventflow.preferenceLinksEnv" -}}
{{- $p := .Values.preferences }}
- name: EVENTFLOW_PREFERENCES_PUBLIC_URL
  value: {{ required "preferences.publicUrl is required when preferences.enabled: messages link there" $p.publicUrl | quote }}
- name: EVENTFLOW_PREFERENCES_SIGNING_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ required "preferences.signingKeys.secretName is required when preferences.enabled: links are signed" $p.signingKeys.secretName | quote }}
      key: {{ $p.signingKeys.key | quote }}
{{- with $p.signingKeyId }}
- name: EVENTFLOW_PREFERENCES_SIGNING_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- with $p.unsubscribeMailto }}
- name: EVENTFLOW_PREFERENCES_UNSUBSCRIBE_MAILTO
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Environment of `eventflow preferences`. */}}
{{- define "eventflow.preferencesEnv" -}}
{{- $p := .Values.preferences }}
{{- include "eventflow.preferenceLinksEnv" . }}
- name: EVENTFLOW_PREFERENCES_PORT
  value: {{ $p.port | quote }}
{{- with $p.apiToken.secretName }}
- name: EVENTFLOW_PREFERENCES_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $p.apiToken.key | quote }}
{{- end }}
{{- end }}

{{/* The worker puts preference links in messages while the preference center is deployed. */}}
{{- define "eventflow.preferencesWorkerEnv" -}}
{{- if .Values.preferences.enabled }}
{{ include "eventflow.preferenceLinksEnv" . }}
{{- end }}
{{- end }}

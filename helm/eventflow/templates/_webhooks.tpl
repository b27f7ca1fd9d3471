{{/* Environment of `eventflow webhooks`: its own settings, the verification key, and the Twilio token it checks signatures with. */}}
{{- define "eventflow.webhooksEnv" -}}
{{- $w := .Values.webhooks }}
- name: EVENTFLOW_WEBHOOKS_PUBLIC_URL
  value: {{ required "webhooks.publicUrl is required when webhooks.enabled: the URL SendGrid and Twilio post to" $w.publicUrl | quote }}
- name: EVENTFLOW_WEBHOOKS_PORT
  value: {{ $w.port | quote }}
- name: EVENTFLOW_FEEDBACK_TOPIC
  value: {{ $w.feedbackTopic | quote }}
- name: EVENTFLOW_FEEDBACK_CONSUMER_GROUP
  value: {{ $w.feedbackConsumerGroup | quote }}
- name: EVENTFLOW_WEBHOOKS_REPLAY_WINDOW_SECONDS
  value: {{ $w.replayWindowSeconds | quote }}
{{- with $w.sendgrid.verificationKey.secretName }}
- name: SENDGRID_WEBHOOK_VERIFICATION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $w.sendgrid.verificationKey.key | quote }}
{{- end }}
{{- if $w.deviceApi.tokens.secretName }}
- name: EVENTFLOW_DEVICE_API_TOKENS_FILE
  value: /etc/eventflow/device-api/tokens
{{- end }}
{{- with .Values.providers.twilio.authToken.secretName }}
- name: TWILIO_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.providers.twilio.authToken.key | quote }}
{{- end }}
{{- end }}

{{/* The worker asks Twilio for status callbacks at the webhook service's public URL. */}}
{{- define "eventflow.webhooksWorkerEnv" -}}
{{- if .Values.webhooks.enabled }}
- name: EVENTFLOW_WEBHOOKS_PUBLIC_URL
  value: {{ .Values.webhooks.publicUrl | quote }}
{{- end }}
{{- end }}

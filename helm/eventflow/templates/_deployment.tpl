{{/*
One Deployment; call with (dict "root" $ "component" "consumer" "cfg" .Values.consumer
"args" (list "consume") "autoscaled" true
"envTemplate" "eventflow.consumerEnv"), optionally "extraPorts" (list (dict "name" "http" "port" 8080)).
The consumer and the worker differ only in these inputs, so probes, security and volumes cannot
drift between them.
*/}}
{{- define "eventflow.deployment" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
{{- $selector := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "eventflow.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "eventflow.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ $cfg.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "eventflow.componentSelectorLabels" $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "eventflow.componentSelectorLabels" $selector | nindent 8 }}
        {{- with $cfg.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- if include "eventflow.journeysMounted" $root }}
        checksum/journeys: {{ include "eventflow.journeysAndSourcesChecksum" $root }}
        {{- end }}
        {{- with $cfg.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "eventflow.serviceAccountName" $root }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $cfg.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "eventflow.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["eventflow"]
          args:
            {{- toYaml .args | nindent 12 }}
          env:
            {{- include "eventflow.env" $root | trim | nindent 12 }}
            {{- include .envTemplate $root | trim | nindent 12 }}
          ports:
            - name: metrics
              containerPort: {{ $root.Values.metricsPort }}
              protocol: TCP
            {{- range .extraPorts }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
          resources:
            {{- toYaml $cfg.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- include "eventflow.journeysMounts" $root | nindent 12 }}
            {{- if $root.Values.temporal.tls.secretName }}
            - name: temporal-tls
              mountPath: /etc/eventflow/temporal-tls
              readOnly: true
            {{- end }}
            {{- if $root.Values.kafka.tlsSecretName }}
            - name: kafka-tls
              mountPath: /etc/eventflow/kafka-tls
              readOnly: true
            {{- end }}
            {{- include "eventflow.payloadKeysMount" $root | nindent 12 }}
            {{- include "eventflow.addressKeysMount" $root | nindent 12 }}
            {{- include "eventflow.databaseMounts" $root | nindent 12 }}
            {{- include "eventflow.componentSecretMounts" (dict "root" $root "component" .component) | nindent 12 }}
            {{- with $root.Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        # The root filesystem is read-only; the cache dir and Python's temp files live here.
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        {{- include "eventflow.journeysVolumes" $root | nindent 8 }}
        {{- with $root.Values.temporal.tls.secretName }}
        - name: temporal-tls
          secret:
            secretName: {{ . }}
            defaultMode: 0440
        {{- end }}
        {{- with $root.Values.kafka.tlsSecretName }}
        - name: kafka-tls
          secret:
            secretName: {{ . }}
            defaultMode: 0440
        {{- end }}
        {{- include "eventflow.payloadKeysVolume" $root | nindent 8 }}
        {{- include "eventflow.addressKeysVolume" $root | nindent 8 }}
        {{- include "eventflow.databaseVolumes" $root | nindent 8 }}
        {{- include "eventflow.componentSecretVolumes" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with $root.Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if $cfg.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml $cfg.topologySpreadConstraints | nindent 8 }}
      {{- else if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
        - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
          topologyKey: {{ . }}
          whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "eventflow.componentSelectorLabels" $selector | nindent 14 }}
        {{- end }}
      {{- end }}
      {{- with $cfg.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

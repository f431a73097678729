{{/* Names and labels. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.fullname" -}}
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

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: pass (list $ "gateway"). */}}
{{- define "switchboard.selectorLabels" -}}
{{- $root := index . 0 }}
app.kubernetes.io/name: {{ include "switchboard.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "switchboard.secretName" -}}
{{- default (printf "%s-config" (include "switchboard.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "switchboard.brokerHeadless" -}}
{{- printf "%s-broker" (include "switchboard.fullname" .) }}
{{- end }}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The drain, end to end: preStop sleep, then the process' own drain. */}}
{{- define "switchboard.terminationGracePeriodSeconds" -}}
{{- add .Values.drain.preStopSeconds .Values.drain.timeoutSeconds .Values.drain.graceMarginSeconds }}
{{- end }}

{{/*
Environment shared by both roles: the pod's address (gossip binds and
announces it), the brokers' headless service as the gossip seed, config,
the drain timeout and the cluster credentials' paths.
*/}}
{{- define "switchboard.commonEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: SWITCHBOARD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SWITCHBOARD_GOSSIP
  value: "$(POD_IP):7946"
- name: SWITCHBOARD_SEEDS
  value: {{ printf "%s.%s.svc:7946" (include "switchboard.brokerHeadless" .) .Release.Namespace | quote }}
- name: SWITCHBOARD_CONFIG
  value: /etc/switchboard/switchboard.toml
- name: SWITCHBOARD_DRAIN_TIMEOUT
  value: {{ printf "%ds" (int .Values.drain.timeoutSeconds) | quote }}
- name: SWITCHBOARD_LOG
  value: {{ .Values.log.level | quote }}
- name: SWITCHBOARD_LOG_JSON
  value: {{ .Values.log.json | quote }}
{{- end }}

{{/* Pod-level parts shared by both roles. */}}
{{- define "switchboard.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ include "switchboard.terminationGracePeriodSeconds" . }}
{{- end }}

{{/* Pod annotations of one component: pass (list $ "broker" "9000"). */}}
{{- define "switchboard.podAnnotations" -}}
{{- $root := index . 0 }}
{{- $annotations := dict }}
{{- if $root.Values.metrics.podAnnotations }}
{{- $_ := set $annotations "prometheus.io/scrape" "true" }}
{{- $_ := set $annotations "prometheus.io/port" (index . 2) }}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" }}
{{- if and (eq (index . 1) "gateway") $root.Values.gateway.tls.enabled }}
{{- $_ := set $annotations "prometheus.io/scheme" "https" }}
{{- end }}
{{- end }}
{{- if not $root.Values.existingSecret }}
{{- /* Roll the pods when the config or the given secrets change. */}}
{{- $_ := set $annotations "checksum/config" (toJson (list $root.Values.config $root.Values.auth) | sha256sum) }}
{{- end }}
{{- $annotations = merge (deepCopy (index $root.Values (index . 1)).podAnnotations) $annotations }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Client-facing secrets: gateways only (brokers never see them). */}}
{{- define "switchboard.authEnv" -}}
- name: SWITCHBOARD_AUTH_AUDIENCE
  value: {{ .Values.auth.audience | quote }}
- name: SWITCHBOARD_AUTH_ISSUER
  value: {{ .Values.auth.issuer | quote }}
- name: SWITCHBOARD_HMAC_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: hmac-secret
      optional: true
- name: SWITCHBOARD_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: api-keys
      optional: true
{{- end }}

{{/*
The cluster credentials' environment of one role: pass (list $ "broker").
Brokers find their certificate by their pod name; gateways share one.
*/}}
{{- define "switchboard.clusterSecurityEnv" -}}
{{- $root := index . 0 }}
{{- $role := index . 1 }}
{{- if $root.Values.clusterSecurity.enabled }}
{{- $file := ternary "$(SWITCHBOARD_NAME)" "gateway" (eq $role "broker") }}
- name: SWITCHBOARD_TLS_CA
  value: /etc/switchboard-tls/ca.crt
- name: SWITCHBOARD_TLS_CERT
  value: /etc/switchboard-tls/{{ $file }}.crt
- name: SWITCHBOARD_TLS_KEY
  value: /etc/switchboard-tls/{{ $file }}.key
- name: SWITCHBOARD_GOSSIP_KEY
  value: /etc/switchboard-gossip/gossip.key
{{- else }}
- name: SWITCHBOARD_INSECURE
  value: "true"
{{- end }}
{{- end }}

{{/* The volume mounts of the cluster credentials. */}}
{{- define "switchboard.clusterSecurityMounts" -}}
{{- if .Values.clusterSecurity.enabled }}
- name: cluster-tls
  mountPath: /etc/switchboard-tls
  readOnly: true
- name: gossip-key
  mountPath: /etc/switchboard-gossip
  readOnly: true
{{- end }}
{{- end }}

{{/*
The volumes of one role: pass (list $ "broker"). Brokers get only
switchboard.toml from the config Secret; gateways all of it.
*/}}
{{- define "switchboard.volumes" -}}
{{- $root := index . 0 }}
{{- $role := index . 1 }}
{{- $sec := $root.Values.clusterSecurity }}
{{- $full := include "switchboard.fullname" $root }}
volumes:
  - name: config
    secret:
      secretName: {{ include "switchboard.secretName" $root }}
      {{- if eq $role "broker" }}
      items:
        - key: switchboard.toml
          path: switchboard.toml
      {{- end }}
{{- if $sec.enabled }}
  - name: gossip-key
    secret:
      secretName: {{ $sec.existingGossipSecret | default (printf "%s-gossip" $full) }}
      defaultMode: 0400
      items:
        - key: gossip.key
          path: gossip.key
  - name: cluster-tls
{{- if eq $sec.certificates "certManager" }}
    projected:
      defaultMode: 0400
      sources:
      {{- if eq $role "broker" }}
      {{- range $i := until (int $root.Values.broker.replicas) }}
      {{- $name := printf "%s-broker-%d" $full $i }}
        - secret:
            name: {{ $name }}-tls
            items:
              {{- if eq $i 0 }}
              - key: ca.crt
                path: ca.crt
              {{- end }}
              - key: tls.crt
                path: {{ $name }}.crt
              - key: tls.key
                path: {{ $name }}.key
      {{- end }}
      {{- else }}
        - secret:
            name: {{ $full }}-gateway-tls
            items:
              - key: ca.crt
                path: ca.crt
              - key: tls.crt
                path: gateway.crt
              - key: tls.key
                path: gateway.key
      {{- end }}
{{- else }}
    secret:
      defaultMode: 0400
      {{- $existing := ternary $sec.existingBrokerSecret $sec.existingGatewaySecret (eq $role "broker") }}
      secretName: {{ $existing | default (printf "%s-%s-tls" $full $role) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A Kubernetes memory quantity ("1Gi", "512Mi", "1G", "1073741824") in bytes,
or "" if none is given. Pass the quantity.
*/}}
{{- define "switchboard.memoryBytes" -}}
{{- $q := toString (default "" .) -}}
{{- if $q -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $unit := regexFind "[A-Za-z]+$" $q -}}
{{- $number := trimSuffix $unit $q -}}
{{- if and $unit (not (hasKey $units $unit)) -}}
{{- fail (printf "memory limit %q: unknown unit %q" $q $unit) -}}
{{- end -}}
{{- mul (int64 $number) (int64 (default 1 (get $units $unit))) -}}
{{- end -}}
{{- end }}

{{/*
Limits sized from a pod's memory limit (docs/operations.md, Kubernetes):
a broker's memory budget is half of it (the budget counts state, not the
allocator's overhead or the process' fixed cost), a gateway's
max_connections one per 64 KiB of it. Pass (list $ "broker") or
(list $ "gateway"); nothing without a memory limit.
*/}}
{{- define "switchboard.memoryEnv" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{- $resources := (index $root.Values $role).resources | default dict -}}
{{- $limit := include "switchboard.memoryBytes" (($resources.limits | default dict).memory) -}}
{{- if $limit -}}
{{- if eq $role "broker" }}
- name: SWITCHBOARD_MEMORY_BUDGET_BYTES
  value: {{ div (int64 $limit) 2 | quote }}
{{- else }}
- name: SWITCHBOARD_MAX_CONNECTIONS
  value: {{ max 1 (div (int64 $limit) 65536) | quote }}
{{- end }}
{{- end -}}
{{- end }}

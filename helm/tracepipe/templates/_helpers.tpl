{{/* Names ------------------------------------------------------------------ */}}
{{- define "tracepipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tracepipe.fullname" -}}
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

{{- define "tracepipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: common, and the selector of one component (receiver, worker, embedded). */}}
{{- define "tracepipe.labels" -}}
helm.sh/chart: {{ include "tracepipe.chart" . }}
app.kubernetes.io/name: {{ include "tracepipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tracepipe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tracepipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tracepipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tracepipe.componentLabels" -}}
{{ include "tracepipe.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tracepipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tracepipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tracepipe.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "tracepipe.dataDir" -}}/var/lib/tracepipe{{- end -}}
{{- define "tracepipe.authDir" -}}/etc/tracepipe-auth{{- end -}}
{{- define "tracepipe.tlsDir" -}}/etc/tracepipe-tls{{- end -}}

{{- define "tracepipe.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "tracepipe.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* tls/auth settings of each listener (grpc, http, api, metrics) as YAML, merged into the config. */}}
{{- define "tracepipe.listenerSecurity" -}}
{{- if and (not .Values.auth.enabled) (not .Values.auth.allowUnauthenticated) -}}
{{- fail "auth.enabled: false exposes the OTLP receivers and the API without authentication: set auth.allowUnauthenticated: true to accept that" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- $dir := include "tracepipe.tlsDir" . -}}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" $dir) "key_file" (printf "%s/tls.key" $dir) "reload_interval" .Values.tls.reloadInterval -}}
{{- $otlpTls := merge (dict "min_version" "1.2") $tls -}}
{{- if .Values.tls.clientAuth -}}{{- $_ := set $otlpTls "client_ca_file" (printf "%s/ca.crt" $dir) -}}{{- end -}}
{{- $httpTls := merge (dict "min_version" (toString .Values.tls.minVersion)) $otlpTls -}}
{{- $webTls := merge (dict "min_version" (toString .Values.tls.minVersion)) $tls -}}
{{- $open := not .Values.auth.enabled -}}
{{- $out := dict "grpc" dict "http" dict "api" dict "metrics" (dict "auth" (and .Values.auth.enabled .Values.auth.metrics)) -}}
{{- range $k := list "grpc" "http" "api" -}}
{{- if $open -}}{{- $_ := set (index $out $k) "allow_unauthenticated" true -}}{{- end -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $out.grpc "tls" $otlpTls -}}
{{- $_ := set $out.http "tls" $httpTls -}}
{{- if .Values.tls.api -}}{{- $_ := set $out.api "tls" $webTls -}}{{- end -}}
{{- if .Values.tls.metrics -}}{{- $_ := set $out.metrics "tls" $webTls -}}{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Volumes and mounts of the tokens Secret and the TLS Secret (when enabled). */}}
{{- define "tracepipe.securityVolumes" -}}
{{- if .Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "tracepipe.tokensSecret" . }}
    items:
      - {key: {{ .Values.auth.tokensKey | quote }}, path: {{ .Values.auth.tokensKey | quote }}}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- end -}}

{{- define "tracepipe.securityMounts" -}}
{{- if .Values.auth.enabled }}
- {name: auth, mountPath: {{ include "tracepipe.authDir" . }}, readOnly: true}
{{- end }}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: {{ include "tracepipe.tlsDir" . }}, readOnly: true}
{{- end }}
{{- end -}}

{{/* The tracepipe config file: values config (or embedded.config) plus what the chart
     owns: listen endpoints from .Values.ports, the data directory, Kafka SASL refs. */}}
{{- define "tracepipe.config" -}}
{{- $cfg := deepCopy (ternary .Values.embedded.config .Values.config (eq .Values.mode "embedded")) -}}
{{- $svc := default dict $cfg.service -}}
{{- $sec := include "tracepipe.listenerSecurity" . | fromYaml -}}
{{- $api := merge (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.api))) $sec.api -}}
{{- $_ := set $svc "api" $api -}}
{{- $metrics := merge (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.metrics))) $sec.metrics -}}
{{- $_ := set $svc "metrics" $metrics -}}
{{- if .Values.auth.enabled -}}
{{- $_ := set $cfg "auth" (dict "tokens_file" (printf "%s/%s" (include "tracepipe.authDir" .) .Values.auth.tokensKey)) -}}
{{- end -}}
{{- $_ := set $svc "data_dir" (include "tracepipe.dataDir" .) -}}
{{- $_ := set $cfg "service" $svc -}}
{{- $recv := default dict $cfg.receivers -}}
{{- if hasKey $recv "otlp" -}}
{{- $otlp := default dict (index $recv "otlp") -}}
{{- if or (not (hasKey $otlp "grpc")) (index $otlp "grpc") -}}
{{- $g := default dict (index $otlp "grpc") -}}
{{- $_ := set $g "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.otlpGrpc)) -}}
{{- $g = merge $g $sec.grpc -}}
{{- $_ := set $otlp "grpc" $g -}}
{{- end -}}
{{- if or (not (hasKey $otlp "http")) (index $otlp "http") -}}
{{- $h := default dict (index $otlp "http") -}}
{{- $_ := set $h "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.otlpHttp)) -}}
{{- $h = merge $h $sec.http -}}
{{- $_ := set $otlp "http" $h -}}
{{- end -}}
{{- $_ := set $recv "otlp" $otlp -}}
{{- $_ := set $cfg "receivers" $recv -}}
{{- end -}}
{{- if and (ne .Values.mode "embedded") .Values.secrets.kafkaSasl.secretName -}}
{{- $tr := default dict $cfg.transport -}}
{{- $k := default dict $tr.kafka -}}
{{- $sec := dict "protocol" .Values.kafka.sasl.protocol "sasl_mechanism" .Values.kafka.sasl.mechanism "sasl_username" "${KAFKA_SASL_USERNAME}" "sasl_password" "${KAFKA_SASL_PASSWORD}" -}}
{{- $_ := set $k "security" (merge (default dict $k.security) $sec) -}}
{{- $_ := set $tr "kafka" $k -}}
{{- $_ := set $cfg "transport" $tr -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Environment of every tracepipe container: endpoints as values, credentials from existing Secrets. */}}
{{- define "tracepipe.env" -}}
- name: KAFKA_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
{{- with .Values.secrets.kafkaSasl }}
{{- if .secretName }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .secretName | quote }}, key: {{ .usernameKey | quote }}}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .secretName | quote }}, key: {{ .passwordKey | quote }}}
{{- end }}
{{- end }}
{{- $ch := .Values.secrets.clickhouse }}
{{- $u := urlParse .Values.clickhouse.url }}
{{- if and $ch.secretName $ch.dsnKey }}
- name: CLICKHOUSE_DSN
  valueFrom:
    secretKeyRef: {name: {{ $ch.secretName | quote }}, key: {{ $ch.dsnKey | quote }}}
{{- else if $ch.secretName }}
- name: CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $ch.secretName | quote }}, key: {{ $ch.passwordKey | quote }}}
- name: CLICKHOUSE_DSN
  value: {{ printf "%s://%s:$(CLICKHOUSE_PASSWORD)@%s%s" $u.scheme .Values.clickhouse.username $u.host $u.path | quote }}
{{- else }}
- name: CLICKHOUSE_DSN
  value: {{ printf "%s://%s@%s%s" $u.scheme .Values.clickhouse.username $u.host $u.path | quote }}
{{- end }}
{{- if .Values.secrets.redis.secretName }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.redis.secretName | quote }}, key: {{ .Values.secrets.redis.urlKey | quote }}}
{{- else }}
- name: REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- range .Values.secrets.webhooks }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef: {name: {{ .secretName | quote }}, key: {{ .key | quote }}}
{{- end }}
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Probes on the API port. */}}
{{- define "tracepipe.probes" -}}
{{- $p := .Values.probes -}}
{{- $scheme := ternary ", scheme: HTTPS" "" (and .Values.tls.enabled .Values.tls.api) -}}
startupProbe:
  httpGet: {path: {{ $p.startup.path }}, port: api{{ $scheme }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: {{ $p.liveness.path }}, port: api{{ $scheme }}}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: {{ $p.readiness.path }}, port: api{{ $scheme }}}
  initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* Volumes every pod gets: the config, and writable scratch space under a read-only root. */}}
{{- define "tracepipe.configVolume" -}}
- name: config
  configMap:
    name: {{ include "tracepipe.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- include "tracepipe.securityVolumes" . }}
{{- end -}}

{{- define "tracepipe.topologySpread" -}}
{{- $ts := .spec.topologySpread -}}
{{- if $ts.enabled -}}
topologySpreadConstraints:
  - maxSkew: {{ $ts.maxSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ $ts.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "tracepipe.selectorLabels" . | nindent 8 }}
  {{- if $ts.zone }}
  - maxSkew: {{ $ts.maxSkew }}
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: {{ $ts.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "tracepipe.selectorLabels" . | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling and security shared by the workloads; . = dict root component spec */}}
{{- define "tracepipe.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "tracepipe.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .spec.terminationGracePeriodSeconds }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .spec.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "tracepipe.podAnnotations" -}}
checksum/config: {{ include "tracepipe.config" .root | sha256sum }}
{{- with .spec.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

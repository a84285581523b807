{{/* Labels shared by every object of this release. */}}
{{- define "calico-rs.labels" -}}
app.kubernetes.io/part-of: calico-rs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* "repository:tag" of one entry of .Values.images. */}}
{{- define "calico-rs.image" -}}
{{ printf "%s:%s" .repository .tag }}
{{- end -}}

{{/* ETCD_* environment shared by calico-node and the controllers (as Calico's etcd manifest). */}}
{{- define "calico-rs.etcdEnv" -}}
- name: DATASTORE_TYPE
  value: etcdv3
- name: ETCD_ENDPOINTS
  valueFrom:
    configMapKeyRef:
      name: calico-rs-config
      key: etcd_endpoints
{{- if .Values.etcd.tlsSecret }}
- name: ETCD_CA_CERT_FILE
  value: /calico-secrets/etcd-ca
- name: ETCD_KEY_FILE
  value: /calico-secrets/etcd-key
- name: ETCD_CERT_FILE
  value: /calico-secrets/etcd-cert
{{- end }}
{{- end -}}

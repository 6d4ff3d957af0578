# ---------------------------------------------------------------------------
# Kubernetes placement
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name of the Deployment, ServiceAccount, ConfigMap, Role and RoleBinding; `rdsproxy connect --via kube` port-forwards to a ready pod of this Deployment."
  type        = string
  default     = "rdsproxy"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$", var.name))
    error_message = "The name must be a DNS label of at most 52 characters."
  }
}

variable "namespace" {
  description = "Namespace of every object. Use a dedicated one: port-forward permission is granted per namespace, not per pod."
  type        = string
  default     = "rdsproxy"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS label."
  }
}

variable "create_namespace" {
  description = "Create the namespace (false: it must exist)."
  type        = bool
  default     = false
}

variable "image" {
  description = "Container image whose entrypoint is the rdsproxy binary. Default: the release image (Dockerfile, .goreleaser.yaml: distroless static, nonroot 65532). Pin a digest in production (ghcr.io/rdsproxy/rdsproxy@sha256:...). If the entrypoint is something else, set command."
  type        = string
  default     = "ghcr.io/rdsproxy/rdsproxy:v1.0.0"

  validation {
    condition     = length(trimspace(var.image)) > 0 && !can(regex("\\s", var.image))
    error_message = "The image must be a non-empty image reference without spaces."
  }
}

variable "command" {
  description = "Container command (the path of the rdsproxy binary in the image), or null to use the image's entrypoint. The arguments are always `server --config /etc/rdsproxy/server.yaml`."
  type        = list(string)
  default     = null
}

variable "image_pull_policy" {
  description = "Image pull policy: Always, IfNotPresent or Never."
  type        = string
  default     = "IfNotPresent"

  validation {
    condition     = contains(["Always", "IfNotPresent", "Never"], var.image_pull_policy)
    error_message = "The image_pull_policy must be Always, IfNotPresent or Never."
  }
}

variable "image_pull_secrets" {
  description = "Names of image pull secrets in the namespace."
  type        = list(string)
  default     = []
}

variable "replicas" {
  description = "Number of server pods. Clients move to another ready pod when theirs goes away."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 1 && floor(var.replicas) == var.replicas
    error_message = "The replicas must be a positive integer."
  }
}

variable "resources" {
  description = "Container resource requests and limits (Kubernetes quantities). No CPU limit by default, to avoid throttling the relay."
  type = object({
    requests = optional(map(string), { cpu = "50m", memory = "64Mi" })
    limits   = optional(map(string), { memory = "256Mi" })
  })
  default = {}
}

variable "node_selector" {
  description = "Node selector for the pods."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Extra labels on every object and the pods."
  type        = map(string)
  default     = {}
}

variable "iam_role_arn" {
  description = "IAM role for IRSA (annotated on the ServiceAccount as eks.amazonaws.com/role-arn); it needs the policy in the iam_policy_json output. null with EKS Pod Identity: associate the role with service_account_name instead."
  type        = string
  default     = null

  validation {
    condition     = var.iam_role_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", coalesce(var.iam_role_arn, "x")))
    error_message = "The iam_role_arn must be an IAM role ARN."
  }
}

variable "service_account_annotations" {
  description = "Extra ServiceAccount annotations."
  type        = map(string)
  default     = {}
}

variable "port_forward_groups" {
  description = "Kubernetes groups (as your authenticator maps them, e.g. EKS access entries' groups) allowed to port-forward to the server pods."
  type        = list(string)
  default     = []
}

variable "port_forward_users" {
  description = "Kubernetes users allowed to port-forward to the server pods."
  type        = list(string)
  default     = []
}

variable "create_network_policy" {
  description = "Create a NetworkPolicy for the server pods that admits only the admin port, and only from admin_ingress_namespaces / admin_ingress_pod_labels (e.g. Prometheus); with neither set, no network ingress at all. The client port listens on 127.0.0.1 and is reached through port-forward, which the pod network does not carry, so no rule admits it. Kubelet probes come from the node, which common CNIs (Calico, Cilium, VPC CNI) always admit; check yours."
  type        = bool
  default     = true
}

variable "admin_ingress_namespaces" {
  description = "Namespaces (by name) whose pods may reach the admin port (/metrics, /healthz, /readyz), e.g. [\"monitoring\"]. Combined with admin_ingress_pod_labels when both are set. Empty with no pod labels: the admin port is closed to the network."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for n in var.admin_ingress_namespaces : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", n))])
    error_message = "Each namespace must be a Kubernetes namespace name."
  }
}

variable "admin_ingress_pod_labels" {
  description = "Labels of the pods that may reach the admin port, e.g. { \"app.kubernetes.io/name\" = \"prometheus\" }: in admin_ingress_namespaces when set, else in the server's own namespace (NetworkPolicy semantics)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# rdsproxy server settings (see modules/server-config for the YAML keys)
# ---------------------------------------------------------------------------

variable "port" {
  description = "Port the server listens on for clients, on 127.0.0.1 inside the pod: kubectl port-forward connects there."
  type        = number
  default     = 5480

  validation {
    condition     = var.port >= 1024 && var.port <= 65535 && floor(var.port) == var.port
    error_message = "The port must be an integer from 1024 to 65535 (the pod runs unprivileged)."
  }
}

variable "admin_port" {
  description = "Port of /healthz, /readyz and /metrics on 0.0.0.0 inside the pod: the kubelet's HTTP probes connect to the pod IP."
  type        = number
  default     = 9480

  validation {
    condition     = var.admin_port >= 1024 && var.admin_port <= 65535 && floor(var.admin_port) == var.admin_port
    error_message = "The admin_port must be an integer from 1024 to 65535."
  }
}

variable "regions" {
  description = "Regions in which to discover databases (at least one: pods have no instance metadata to take a default from)."
  type        = list(string)

  validation {
    condition     = length(var.regions) > 0
    error_message = "Give at least one region."
  }
}

variable "allow_tags" {
  description = "Tag rules every discovered database must match (key=value, key=glob or key). Empty: rdsproxy:enabled=true."
  type        = list(string)
  default     = []
}

variable "deny_tags" {
  description = "Tag rules that exclude a database when any matches."
  type        = list(string)
  default     = []
}

variable "refresh_interval" {
  description = "Discovery refresh interval (e.g. 60s)."
  type        = string
  default     = "60s"
}

variable "static_targets" {
  description = "Databases declared in the config file besides the discovered ones; same shape as modules/server-config's static_targets."
  type = list(object({
    name       = string
    endpoint   = string
    region     = optional(string)
    auth       = optional(string, "iam")
    tls        = optional(string, "verify-full")
    database   = optional(string)
    users      = optional(list(string), [])
    read_only  = optional(bool, false)
    local_port = optional(number)
    principals = optional(list(string), [])
  }))
  default = []
}

variable "max_sessions" {
  description = "Maximum concurrent client sessions per pod."
  type        = number
  default     = 1000
}

variable "require_identity" {
  description = "Refuse connections that carry no verified caller identity; false only while old clients are upgraded (the README's upgrade steps)."
  type        = bool
  default     = true
}

variable "revoke_sessions" {
  description = "End running sessions that a change of the tag rules, rdsproxy:users or rdsproxy:principals no longer admits; false applies such a change to new sessions only."
  type        = bool
  default     = false
}

variable "startup_timeout" {
  description = "Time a client has to send its startup message."
  type        = string
  default     = "10s"
}

variable "dial_timeout" {
  description = "Upstream dial and TLS timeout."
  type        = string
  default     = "10s"
}

variable "max_startup_size" {
  description = "Largest startup message accepted, in bytes (at least 8024: rdsproxy connect's startup carries the caller identity)."
  type        = number
  default     = 10000
}

variable "drain_timeout" {
  description = "How long SIGTERM waits for sessions to end; the pod's termination grace period is this plus 10 seconds."
  type        = string
  default     = "30s"
}

variable "log_format" {
  description = "Log format: text or json."
  type        = string
  default     = "json"
}

variable "log_level" {
  description = "Log level: debug, info, warn or error."
  type        = string
  default     = "info"
}

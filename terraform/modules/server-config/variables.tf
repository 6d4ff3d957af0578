# Every variable maps to one `rdsproxy server` flag (the YAML key is the long
# flag name); null or empty means "leave the binary's default".

variable "listen" {
  description = "Address the server accepts PostgreSQL clients on (YAML key `listen`). Keep 127.0.0.1 behind SSM or kubectl port-forward: both deliver to loopback."
  type        = string
  default     = "127.0.0.1:5480"

  validation {
    condition     = can(regex("^[^\\s:]*:[0-9]{1,5}$", var.listen))
    error_message = "The listen must be host:port, e.g. 127.0.0.1:5480."
  }
}

variable "server_id" {
  description = "This server's id, which clients sign into their caller identity (YAML key `server-id`). Replicas behind one name (an Auto Scaling group, a Deployment) share one, so a client spread over them is never refused for an identity signed for a sibling. null: the host name."
  type        = string
  default     = null

  validation {
    condition     = var.server_id == null || can(regex("^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", coalesce(var.server_id, "x")))
    error_message = "The server_id must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit."
  }
}

variable "admin_addr" {
  description = "Address of /healthz, /readyz and /metrics (YAML key `admin-addr`)."
  type        = string
  default     = "127.0.0.1:9480"

  validation {
    condition     = can(regex("^[^\\s:]*:[0-9]{1,5}$", var.admin_addr))
    error_message = "The admin_addr must be host:port, e.g. 127.0.0.1:9480."
  }
}

variable "regions" {
  description = "AWS regions in which to discover RDS instances and Aurora clusters (YAML key `region`). Empty: the AWS SDK's region."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.regions : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", r))])
    error_message = "Each region must look like eu-west-1."
  }
}

variable "allow_tags" {
  description = "Tag rules a database must all match to become a target: key=value, key=glob or key (YAML key `allow-tag`). Empty: the binary's default rdsproxy:enabled=true."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.allow_tags : can(regex("^[^=,\\s][^=,]*(=[^,]*)?$", r))])
    error_message = "Each allow tag rule must be key, key=value or key=glob, without commas."
  }
}

variable "deny_tags" {
  description = "Tag rules that exclude a database when any matches (YAML key `deny-tag`)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.deny_tags : can(regex("^[^=,\\s][^=,]*(=[^,]*)?$", r))])
    error_message = "Each deny tag rule must be key, key=value or key=glob, without commas."
  }
}

variable "refresh_interval" {
  description = "How often discovery re-reads RDS (YAML key `refresh-interval`), a duration of at least 10s, such as 60s or 5m."
  type        = string
  default     = "60s"

  validation {
    condition = try(
      tonumber(regex("^([0-9]+)(ms|s|m|h)$", var.refresh_interval)[0]) * lookup({ ms = 0.001, s = 1, m = 60, h = 3600 }, regex("^([0-9]+)(ms|s|m|h)$", var.refresh_interval)[1]) >= 10,
      false,
    )
    error_message = "The refresh_interval must be a number followed by ms, s, m or h, of at least 10s (the server refuses less)."
  }
}

variable "dial_map" {
  description = "Dial overrides ENDPOINT=ADDR, both host:port (YAML key `map`), e.g. to reach RDS through a local tunnel."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.dial_map : can(regex("^[^=,\\s]+:[0-9]+=[^=,\\s]+:[0-9]+$", m))])
    error_message = "Each dial_map entry must be host:port=addr:port."
  }
}

variable "ca_file" {
  description = "Path of an extra CA bundle for upstream TLS (YAML key `ca-file`). The RDS global bundle is built in; null for none."
  type        = string
  default     = null
}

variable "tls_cert" {
  description = "Path of the certificate for TLS on the client hop (YAML key `tls-cert`); set together with tls_key, or leave both null."
  type        = string
  default     = null
}

variable "tls_key" {
  description = "Path of the private key for TLS on the client hop (YAML key `tls-key`); set together with tls_cert, or leave both null."
  type        = string
  default     = null
}

variable "max_sessions" {
  description = "Maximum concurrent client sessions (YAML key `max-sessions`)."
  type        = number
  default     = 1000

  validation {
    condition     = var.max_sessions >= 1 && floor(var.max_sessions) == var.max_sessions
    error_message = "The max_sessions must be a positive integer."
  }
}

variable "require_identity" {
  description = "Refuse connections that carry no verified caller identity (YAML key `require-identity`). Set false only while clients older than caller identity are upgraded (see the README's upgrade steps)."
  type        = bool
  default     = true
}

variable "revoke_sessions" {
  description = "End running sessions that a change of the tag rules, rdsproxy:users or rdsproxy:principals no longer admits (YAML key `revoke-sessions`); false applies such a change to new sessions only."
  type        = bool
  default     = false
}

variable "startup_timeout" {
  description = "Time a client has to send its startup message (YAML key `startup-timeout`)."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.startup_timeout))
    error_message = "The startup_timeout must be a number followed by ms, s, m or h."
  }
}

variable "dial_timeout" {
  description = "Upstream TCP and TLS dial timeout (YAML key `dial-timeout`)."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.dial_timeout))
    error_message = "The dial_timeout must be a number followed by ms, s, m or h."
  }
}

variable "max_startup_size" {
  description = "Largest startup message accepted from a client, in bytes (YAML key `max-startup-size`); at least 8024, since rdsproxy connect's startup carries the caller identity."
  type        = number
  default     = 10000

  validation {
    condition     = var.max_startup_size >= 8024 && floor(var.max_startup_size) == var.max_startup_size
    error_message = "The max_startup_size must be an integer of at least 8024: rdsproxy connect's startup carries a caller identity of up to 7000 bytes (the server refuses less)."
  }
}

variable "drain_timeout" {
  description = "How long SIGTERM waits for sessions to end (YAML key `drain-timeout`). Also sizes the systemd stop timeout."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.drain_timeout))
    error_message = "The drain_timeout must be a number followed by ms, s, m or h."
  }
}

variable "log_format" {
  description = "Log format: text or json (YAML key `log-format`)."
  type        = string
  default     = "json"

  validation {
    condition     = contains(["text", "json"], var.log_format)
    error_message = "The log_format must be text or json."
  }
}

variable "log_level" {
  description = "Log level: debug, info, warn or error (YAML key `log-level`)."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "The log_level must be debug, info, warn or error."
  }
}

variable "static_targets" {
  description = "Databases declared in the config file (YAML key `targets`) in addition to the discovered ones. IAM targets need a region and always use tls verify-full; tls disable is for passthrough targets only. local_port is the client's listen port hint (like the rdsproxy:local-port tag); principals are ARN globs of the callers allowed (like the rdsproxy:principals tag)."
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

  validation {
    condition = alltrue([for t in var.static_targets :
      can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", t.name)) && can(regex("^[^\\s:]+:[0-9]{1,5}$", t.endpoint))
    ])
    error_message = "Each static target needs a name of letters, digits, '.', '_' or '-' and an endpoint host:port."
  }

  validation {
    condition = alltrue([for t in var.static_targets :
      contains(["iam", "passthrough"], t.auth) && contains(["verify-full", "disable"], t.tls)
    ])
    error_message = "A static target's auth must be iam or passthrough and its tls verify-full or disable."
  }

  validation {
    condition     = alltrue([for t in var.static_targets : t.auth != "iam" || (t.tls == "verify-full" && t.region != null)])
    error_message = "An IAM static target needs a region and tls verify-full."
  }

  validation {
    condition     = alltrue([for t in var.static_targets : t.local_port == null || (try(t.local_port >= 1 && t.local_port <= 65535 && floor(t.local_port) == t.local_port, false))])
    error_message = "A static target's local_port (the client's listen port hint, YAML key local-port) must be an integer from 1 to 65535."
  }

  validation {
    condition     = length(distinct([for t in var.static_targets : t.name])) == length(var.static_targets)
    error_message = "Static target names must be unique."
  }
}

variable "config_path" {
  description = "Absolute path at which the consumer installs the rendered YAML; it is passed to `--config`."
  type        = string
  default     = "/etc/rdsproxy/server.yaml"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.config_path))
    error_message = "The config_path must be an absolute path of letters, digits, '.', '_', '-' and '/' (it goes into a systemd command line unquoted)."
  }
}

variable "binary_path" {
  description = "Absolute path of the rdsproxy binary in the systemd unit's ExecStart."
  type        = string
  default     = "/usr/local/bin/rdsproxy"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.binary_path))
    error_message = "The binary_path must be an absolute path of letters, digits, '.', '_', '-' and '/'."
  }
}

variable "aws_region" {
  description = "Value of AWS_REGION in the systemd unit's environment (the SDK's home region for credentials and the default discovery region); null to leave it unset."
  type        = string
  default     = null
}

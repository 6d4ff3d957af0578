output "server_yaml" {
  description = "The rendered `rdsproxy server` config file (YAML). Holds no secrets."
  value       = local.server_yaml

  precondition {
    condition     = (var.tls_cert == null) == (var.tls_key == null)
    error_message = "Set tls_cert and tls_key together, or neither."
  }
}

output "args" {
  description = "Arguments after the binary name: server --config <config_path>."
  value       = local.args
}

output "exec_start" {
  description = "The systemd ExecStart command line (binary path followed by args)."
  value       = local.exec_start
}

output "systemd_unit" {
  description = "A hardened systemd unit (rdsproxy.service) that runs exec_start as a dynamic, unprivileged user."
  value       = local.systemd_unit
}

output "config_path" {
  description = "Where the consumer must install server_yaml."
  value       = var.config_path
}

output "drain_timeout_seconds" {
  description = "drain_timeout in whole seconds, for stop and termination grace periods."
  value       = local.drain_seconds
}

# Renders what `rdsproxy server` reads: the YAML config file, the argument
# vector after the binary name, and a hardened systemd unit. Nothing here
# talks to an API, so the output can be rendered and checked offline.

locals {
  duration_unit_seconds = { ms = 0.001, s = 1, m = 60, h = 3600 }
  drain_parts           = regex("^([0-9]+)(ms|s|m|h)$", var.drain_timeout)
  drain_seconds         = ceil(tonumber(local.drain_parts[0]) * local.duration_unit_seconds[local.drain_parts[1]])

  # Argument vector after the binary name, shared by the systemd unit and the
  # Kubernetes container so that both run exactly the same command.
  args = ["server", "--config", var.config_path]

  server_yaml = templatefile("${path.module}/templates/server.yaml.tftpl", {
    listen           = var.listen
    admin_addr       = var.admin_addr
    regions          = var.regions
    allow_tags       = var.allow_tags
    deny_tags        = var.deny_tags
    refresh_interval = var.refresh_interval
    dial_map         = var.dial_map
    ca_file          = var.ca_file
    tls_cert         = var.tls_cert
    tls_key          = var.tls_key
    max_sessions     = var.max_sessions
    require_identity = var.require_identity
    revoke_sessions  = var.revoke_sessions
    startup_timeout  = var.startup_timeout
    dial_timeout     = var.dial_timeout
    max_startup_size = var.max_startup_size
    drain_timeout    = var.drain_timeout
    log_format       = var.log_format
    log_level        = var.log_level
    server_id        = var.server_id
    targets          = var.static_targets
  })

  exec_start = join(" ", concat([var.binary_path], local.args))

  systemd_unit = templatefile("${path.module}/templates/rdsproxy.service.tftpl", {
    exec_start        = local.exec_start
    aws_region        = var.aws_region
    stop_timeout_secs = local.drain_seconds + 15
  })
}

# rdsproxy server on EC2, reachable only through SSM Session Manager.
#
# Flow: modules/server-config renders the YAML and the systemd unit; user data
# (templates/user-data.sh.tftpl) downloads the binary, checks its SHA-256,
# installs both files and starts the unit; the Auto Scaling group keeps
# desired_capacity instances tagged rdsproxy:server=<name> running. The server
# listens on loopback only: SSM port forwarding delivers to 127.0.0.1, so the
# security group has no ingress rule at all.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  # The region without an attribute that one provider major lacks or
  # deprecates: `region` exists only in v6, `name` is deprecated in v6.0 and
  # `id` in v6.47. `endpoint` (ec2.<region>.<dns suffix>) is in both.
  region = regex("^ec2\\.([a-z0-9-]+)\\.", data.aws_region.current.endpoint)[0]

  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  regions    = length(var.regions) > 0 ? var.regions : [local.region]
  ami_id     = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.ami[0].value)

  # From the url, not the bucket: the bucket name may be known only after
  # apply (examples/aws-complete), and count must be known at plan time. The
  # variable's validation makes "no url" mean "S3".
  binary_from_s3 = var.binary.url == null
  binary_s3_arn  = local.binary_from_s3 ? "arn:${local.partition}:s3:::${var.binary.s3_bucket}/${var.binary.s3_key}" : null

  https_egress_cidr_blocks = var.https_egress_cidr_blocks != null ? var.https_egress_cidr_blocks : (var.create_vpc_endpoints ? [] : ["0.0.0.0/0"])

  binary_path = "/usr/local/bin/rdsproxy"
  tags        = merge(var.tags, { "rdsproxy:server" = var.name })
}

module "config" {
  source = "../server-config"

  listen           = "127.0.0.1:${var.port}"
  admin_addr       = "127.0.0.1:${var.admin_port}"
  regions          = local.regions
  allow_tags       = var.allow_tags
  deny_tags        = var.deny_tags
  refresh_interval = var.refresh_interval
  static_targets   = var.static_targets
  max_sessions     = var.max_sessions
  require_identity = var.require_identity
  revoke_sessions  = var.revoke_sessions
  startup_timeout  = var.startup_timeout
  dial_timeout     = var.dial_timeout
  max_startup_size = var.max_startup_size
  drain_timeout    = var.drain_timeout
  log_format       = var.log_format
  log_level        = var.log_level
  server_id        = var.name
  aws_region       = local.region
  binary_path      = local.binary_path
}

locals {
  # The readiness check (templates/health-check.*): script, oneshot unit, timer.
  health_script_path = "/usr/local/libexec/rdsproxy-health"
  health_vars = {
    admin_port          = var.admin_port
    failures            = var.readiness_replacement.failures
    interval_seconds    = var.readiness_replacement.interval_seconds
    first_check_seconds = local.health_check_grace_period + 60
    region              = local.region
    script_path         = local.health_script_path
  }
  health_check_grace_period = 120
  health = var.readiness_replacement.enabled ? {
    script  = templatefile("${path.module}/templates/health-check.sh.tftpl", local.health_vars)
    service = templatefile("${path.module}/templates/health-check.service.tftpl", local.health_vars)
    timer   = templatefile("${path.module}/templates/health-check.timer.tftpl", local.health_vars)
  } : null

  # The lifecycle hooks' script (templates/lifecycle.sh.tftpl) and the
  # drain watcher's unit.
  lifecycle_script_path = "/usr/local/libexec/rdsproxy-lifecycle"
  lifecycle_vars = {
    admin_port    = var.admin_port
    ready_timeout = var.lifecycle_hooks.ready_timeout_seconds
    ready_hook    = local.ready_hook
    drain_hook    = local.drain_hook
    region        = local.region
    script_path   = local.lifecycle_script_path
  }
  lifecycle = var.lifecycle_hooks.enabled ? {
    script  = templatefile("${path.module}/templates/lifecycle.sh.tftpl", local.lifecycle_vars)
    service = templatefile("${path.module}/templates/drain.service.tftpl", local.lifecycle_vars)
  } : null

  user_data = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    lifecycle_script_path = local.lifecycle_script_path
    lifecycle             = local.lifecycle
    logs = local.logs_enabled ? {
      agent_config   = local.cloudwatch_agent_config
      export_unit    = local.journal_export_unit
      logrotate      = local.logrotate_config
      log_file       = local.log_file
      log_group_name = local.log_group_name
    } : null
    health_script_path = local.health_script_path
    health             = local.health
    binary_sha256      = var.binary.sha256
    binary_url         = var.binary.url
    binary_s3_bucket   = var.binary.s3_bucket
    binary_s3_key      = var.binary.s3_key
    binary_s3_region   = coalesce(var.binary.s3_region, local.region)
    binary_path        = local.binary_path
    args               = module.config.args
    config_path        = module.config.config_path
    server_yaml        = module.config.server_yaml
    systemd_unit       = module.config.systemd_unit
  })
}

# Audit that outlives the instance (cloudwatch_logs): journald keeps the
# server's session lines only as long as the instance lives, and the Auto
# Scaling group replaces instances. The CloudWatch agent has no journald
# input, so rdsproxy-journal-export.service follows the unit's journal
# (resuming at a cursor, so a restart neither loses nor repeats lines) into
# /var/log/rdsproxy/server.log, and the agent ships that file to a log group
# with retention and optional KMS encryption, one stream per instance.

locals {
  logs_enabled   = var.cloudwatch_logs.enabled
  log_group_name = coalesce(var.cloudwatch_logs.log_group_name, "/rdsproxy/${var.name}")
  log_file       = "/var/log/rdsproxy/server.log"

  cloudwatch_agent_config = jsonencode({
    agent = { run_as_user = "root" }
    logs = {
      logs_collected = {
        files = {
          collect_list = [{
            file_path         = local.log_file
            log_group_name    = local.log_group_name
            log_stream_name   = "{instance_id}"
            retention_in_days = -1
          }]
        }
      }
    }
  })

  journal_export_unit = <<-EOT
    # Rendered by Terraform (modules/aws-server): rdsproxy's journal, as
    # plain lines, for the CloudWatch agent.
    [Unit]
    Description=Export rdsproxy's journal to ${local.log_file} for CloudWatch Logs
    After=rdsproxy.service

    [Service]
    ExecStart=/usr/bin/journalctl --unit=rdsproxy.service --output=cat --follow --cursor-file=/var/lib/rdsproxy-journal/cursor
    StandardOutput=append:${local.log_file}
    StateDirectory=rdsproxy-journal
    Restart=always
    RestartSec=5s
    NoNewPrivileges=yes
    ProtectSystem=full
    ProtectHome=yes
    PrivateTmp=yes
    PrivateNetwork=yes

    [Install]
    WantedBy=multi-user.target
  EOT

  logrotate_config = <<-EOT
    ${local.log_file} {
      daily
      rotate 3
      maxsize 100M
      compress
      delaycompress
      missingok
      notifempty
      copytruncate
    }
  EOT
}

resource "aws_cloudwatch_log_group" "this" {
  count = local.logs_enabled ? 1 : 0

  name              = local.log_group_name
  retention_in_days = var.cloudwatch_logs.retention_in_days
  kms_key_id        = var.cloudwatch_logs.kms_key_arn
  tags              = local.tags
}

# The agent writes to this group only: it creates one stream per instance
# and puts events; the group itself is Terraform's.
data "aws_iam_policy_document" "logs" {
  count = local.logs_enabled ? 1 : 0

  statement {
    sid       = "ShipServerLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}:*"]
  }
}

resource "aws_iam_role_policy" "logs" {
  count = local.logs_enabled ? 1 : 0

  name_prefix = "cloudwatch-logs-"
  role        = aws_iam_role.this.id
  policy      = data.aws_iam_policy_document.logs[0].json
}

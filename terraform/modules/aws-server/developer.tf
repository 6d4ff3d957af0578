# The least-privilege policy a developer needs for `rdsproxy connect --via ssm`
# against this server. It is only rendered (see the developer_iam_policy_json
# output); attach it to the developers' role or permission set yourself.
#
# AWS-StartPortForwardingSession takes the port as a parameter, and no IAM
# condition can limit it: a developer allowed that document may forward to
# any port on the instance (22, the admin port). The module's own Session
# document pins the destination to the server port, and by default it is
# the only document the policy allows (`rdsproxy connect --ssm-document`).

resource "aws_ssm_document" "port_forward" {
  name            = local.ssm_document_name
  document_type   = "Session"
  document_format = "JSON"
  tags            = local.tags

  content = jsonencode({
    schemaVersion = "1.0"
    description   = "rdsproxy server ${var.name}: port forwarding to the server port ${var.port} only"
    sessionType   = "Port"
    parameters = {
      localPortNumber = {
        type           = "String"
        description    = "Port on the client machine (session-manager-plugin only; rdsproxy ignores it)."
        allowedPattern = "^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
        default        = "0"
      }
    }
    properties = {
      portNumber      = tostring(var.port)
      type            = "LocalPortForwarding"
      localPortNumber = "{{ localPortNumber }}"
    }
  })
}

locals {
  ssm_document_name = "${var.name}-port-forward"
  developer_regions = length(var.developer_regions) > 0 ? var.developer_regions : [local.region]
  # The documents developers may start sessions with, in every developer
  # region (the module deployed there under the same name creates its own).
  developer_documents = var.developer_session_document == "pinned" ? [
    for r in local.developer_regions : "arn:${local.partition}:ssm:${r}:${local.account_id}:document/${local.ssm_document_name}"
    ] : [
    for r in local.developer_regions : "arn:${local.partition}:ssm:${r}::document/AWS-StartPortForwardingSession"
  ]
  developer_sessions = flatten([for r in local.developer_regions : [
    "arn:${local.partition}:ssm:${r}:${local.account_id}:session/$${aws:username}-*",
    "arn:${local.partition}:ssm:${r}:${local.account_id}:session/$${aws:userid}-*",
  ]])
}

data "aws_iam_policy_document" "developer" {
  # Start port-forwarding sessions to this server's instances only. The
  # SessionDocumentAccessCheck condition makes SSM check the document below,
  # so the default shell document (SSM-SessionManagerRunShell) is refused.
  statement {
    sid       = "StartSessionOnServerInstances"
    effect    = "Allow"
    actions   = ["ssm:StartSession"]
    resources = [for r in local.developer_regions : "arn:${local.partition}:ec2:${r}:${local.account_id}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/rdsproxy:server"
      values   = [var.name]
    }

    condition {
      test     = "BoolIfExists"
      variable = "ssm:SessionDocumentAccessCheck"
      values   = ["true"]
    }
  }

  # AWS requires the document check condition on every statement that
  # allows ssm:StartSession for it to be enforced.
  statement {
    sid       = "StartSessionWithPortForwardingDocument"
    effect    = "Allow"
    actions   = ["ssm:StartSession"]
    resources = local.developer_documents

    condition {
      test     = "BoolIfExists"
      variable = "ssm:SessionDocumentAccessCheck"
      values   = ["true"]
    }
  }

  # Own sessions only. Session ids start with the IAM user name for IAM
  # users; AWS's current samples use the caller's user id. A policy variable
  # that is undefined for the caller (aws:username for a role) matches nothing.
  statement {
    sid       = "ManageOwnSessions"
    effect    = "Allow"
    actions   = ["ssm:TerminateSession", "ssm:ResumeSession"]
    resources = local.developer_sessions
  }

  # The client opens the session's data channel (WebSocket) itself.
  statement {
    sid       = "OpenOwnDataChannels"
    effect    = "Allow"
    actions   = ["ssmmessages:OpenDataChannel"]
    resources = local.developer_sessions
  }

  # Roles and federated users (IAM Identity Center): SSM tags every session
  # with the caller's user id.
  statement {
    sid       = "ManageOwnSessionsFederated"
    effect    = "Allow"
    actions   = ["ssm:TerminateSession", "ssm:ResumeSession"]
    resources = [for r in local.developer_regions : "arn:${local.partition}:ssm:${r}:${local.account_id}:session/*"]

    condition {
      test     = "StringLike"
      variable = "ssm:resourceTag/aws:ssmmessages:session-id"
      values   = ["$${aws:userid}"]
    }
  }

  # Finding the instances by tag, and which of them have their SSM agent
  # Online (connect spreads over those); neither Describe can be scoped to
  # resources.
  statement {
    sid       = "FindServerInstances"
    effect    = "Allow"
    actions   = ["ec2:DescribeInstances", "ssm:DescribeInstanceInformation"]
    resources = ["*"]
  }

  # IAM database authentication, only when developer_rds_connect is set.
  dynamic "statement" {
    for_each = var.developer_rds_connect == null ? [] : [var.developer_rds_connect]

    content {
      sid     = "ConnectAsDatabaseUsers"
      effect  = "Allow"
      actions = ["rds-db:connect"]
      # Every discovery region: a resource id names one database anyway.
      resources = [
        for t in setproduct(local.regions, statement.value.resource_ids, statement.value.db_users) :
        "arn:${local.partition}:rds-db:${t[0]}:${local.account_id}:dbuser:${t[1]}/${t[2]}"
      ]
    }
  }
}

locals {
  # One ARN per (database resource id, database user). DbiResourceId (db-...)
  # for instances, DbClusterResourceId (cluster-...) for Aurora clusters.
  rds_connect_arn_template = "arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:<DbiResourceId or DbClusterResourceId>/<db-user>"
}

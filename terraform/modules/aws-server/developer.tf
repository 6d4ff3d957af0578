# The least-privilege policy a developer needs for `rdsproxy connect --via ssm`
# against this server. It is only rendered (see the developer_iam_policy_json
# output); attach it to the developers' role or permission set yourself.

data "aws_iam_policy_document" "developer" {
  # Start port-forwarding sessions to this server's instances only. The
  # SessionDocumentAccessCheck condition makes SSM check the document below,
  # so the default shell document (SSM-SessionManagerRunShell) is refused.
  statement {
    sid       = "StartSessionOnServerInstances"
    effect    = "Allow"
    actions   = ["ssm:StartSession"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:instance/*"]

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
    resources = ["arn:${local.partition}:ssm:${local.region}::document/AWS-StartPortForwardingSession"]

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
    sid     = "ManageOwnSessions"
    effect  = "Allow"
    actions = ["ssm:TerminateSession", "ssm:ResumeSession"]
    resources = [
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:session/$${aws:username}-*",
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:session/$${aws:userid}-*",
    ]
  }

  # The client opens the session's data channel (WebSocket) itself.
  statement {
    sid     = "OpenOwnDataChannels"
    effect  = "Allow"
    actions = ["ssmmessages:OpenDataChannel"]
    resources = [
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:session/$${aws:username}-*",
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:session/$${aws:userid}-*",
    ]
  }

  # Roles and federated users (IAM Identity Center): SSM tags every session
  # with the caller's user id.
  statement {
    sid       = "ManageOwnSessionsFederated"
    effect    = "Allow"
    actions   = ["ssm:TerminateSession", "ssm:ResumeSession"]
    resources = ["arn:${local.partition}:ssm:${local.region}:${local.account_id}:session/*"]

    condition {
      test     = "StringLike"
      variable = "ssm:resourceTag/aws:ssmmessages:session-id"
      values   = ["$${aws:userid}"]
    }
  }

  # Finding the instances by tag; EC2 Describe* cannot be scoped to resources.
  statement {
    sid       = "FindServerInstances"
    effect    = "Allow"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
  }

  # IAM database authentication, only when developer_rds_connect is set.
  dynamic "statement" {
    for_each = var.developer_rds_connect == null ? [] : [var.developer_rds_connect]

    content {
      sid     = "ConnectAsDatabaseUsers"
      effect  = "Allow"
      actions = ["rds-db:connect"]
      resources = [
        for pair in setproduct(statement.value.resource_ids, statement.value.db_users) :
        "arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${pair[0]}/${pair[1]}"
      ]
    }
  }
}

locals {
  # One ARN per (database resource id, database user). DbiResourceId (db-...)
  # for instances, DbClusterResourceId (cluster-...) for Aurora clusters.
  rds_connect_arn_template = "arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:<DbiResourceId or DbClusterResourceId>/<db-user>"
}

# The instance role: Session Manager's managed core policy, plus exactly the
# two read-only RDS calls discovery makes, plus (only for S3 delivery) read
# access to the one binary object, plus (readiness_replacement) marking an
# instance of this server's own group Unhealthy, plus (lifecycle_hooks)
# completing its own group's lifecycle actions. Nothing else.

data "aws_iam_policy_document" "assume_role" {
  statement {
    sid     = "EC2AssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name_prefix          = "${var.name}-"
  description          = "rdsproxy server ${var.name}: SSM managed instance and RDS discovery"
  assume_role_policy   = data.aws_iam_policy_document.assume_role.json
  permissions_boundary = var.iam_role_permissions_boundary
  tags                 = local.tags
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.this.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

# DescribeDBInstances and DescribeDBClusters list every database in a region;
# listing cannot be scoped to resources, hence "*" (resources, not actions).
data "aws_iam_policy_document" "discovery" {
  statement {
    sid       = "DiscoverDatabases"
    effect    = "Allow"
    actions   = ["rds:DescribeDBInstances", "rds:DescribeDBClusters"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "discovery" {
  name_prefix = "rds-discovery-"
  role        = aws_iam_role.this.id
  policy      = data.aws_iam_policy_document.discovery.json
}

data "aws_iam_policy_document" "binary" {
  count = local.binary_from_s3 ? 1 : 0

  statement {
    sid       = "ReadServerBinary"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = [local.binary_s3_arn]
  }
}

resource "aws_iam_role_policy" "binary" {
  count = local.binary_from_s3 ? 1 : 0

  name_prefix = "binary-"
  role        = aws_iam_role.this.id
  policy      = data.aws_iam_policy_document.binary[0].json
}

# SetInstanceHealth on this server's group only: the group's name starts with
# "<name>-" (name_prefix) and it carries the tag rdsproxy:server=<name>.
data "aws_iam_policy_document" "health" {
  count = var.readiness_replacement.enabled ? 1 : 0

  statement {
    sid       = "ReplaceOwnUnreadyInstance"
    effect    = "Allow"
    actions   = ["autoscaling:SetInstanceHealth"]
    resources = ["arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.name}-*"]

    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/rdsproxy:server"
      values   = [var.name]
    }
  }
}

resource "aws_iam_role_policy" "health" {
  count = var.readiness_replacement.enabled ? 1 : 0

  name_prefix = "readiness-replacement-"
  role        = aws_iam_role.this.id
  policy      = data.aws_iam_policy_document.health[0].json
}

# Completing the launch and termination hooks of this server's group only.
# The instance learns its group's name (generated from name_prefix, so not
# known when the launch template is written) with
# DescribeAutoScalingInstances, which has no resource-level permissions.
data "aws_iam_policy_document" "lifecycle" {
  count = var.lifecycle_hooks.enabled ? 1 : 0

  statement {
    sid       = "CompleteOwnLifecycleActions"
    effect    = "Allow"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = ["arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.name}-*"]

    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/rdsproxy:server"
      values   = [var.name]
    }
  }

  statement {
    sid       = "FindOwnGroup"
    effect    = "Allow"
    actions   = ["autoscaling:DescribeAutoScalingInstances"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "lifecycle" {
  count = var.lifecycle_hooks.enabled ? 1 : 0

  name_prefix = "lifecycle-hooks-"
  role        = aws_iam_role.this.id
  policy      = data.aws_iam_policy_document.lifecycle[0].json
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.this.name
  tags        = local.tags
}

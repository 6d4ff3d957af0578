# Launch template with the secure defaults (IMDSv2 only, no public IP,
# encrypted gp3 root volume) and an Auto Scaling group of desired_capacity
# instances spread over the subnets' availability zones, which replaces
# instances one by one when the template changes: a new instance enters
# service only once its /readyz answers (launch hook), and an old one leaves
# only after its server has drained (termination hook).

# The subnets' zones: a group of two or more must span two zones, or one
# zone's outage takes every server down.
# count, not for_each: the ids may be known only after apply (subnets
# created with the module), their number is known.
data "aws_subnet" "this" {
  count = length(var.subnet_ids)
  id    = var.subnet_ids[count.index]
}

locals {
  # The hooks' names; templates/lifecycle.sh.tftpl completes them.
  ready_hook = "rdsproxy-ready"
  drain_hook = "rdsproxy-drain"
  # The termination hook outlasts the drain: SIGTERM, drain_timeout for the
  # sessions, the unit's stop margin (TimeoutStopSec = drain + 15 s), and the
  # script's poll of the lifecycle state (5 s) and its API calls.
  drain_hook_seconds = module.config.drain_timeout_seconds + 15 + 40
}

resource "aws_launch_template" "this" {
  name_prefix   = "${var.name}-"
  description   = "rdsproxy server ${var.name}"
  image_id      = local.ami_id
  instance_type = var.instance_type
  # Compressed: cloud-init gunzips user data, and EC2's limit (16 KB
  # base64-encoded) would not hold the script with every option on.
  user_data              = base64gzip(local.user_data)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_protocol_ipv6          = "disabled"
    instance_metadata_tags      = "disabled"
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.this.id]
  }

  block_device_mappings {
    device_name = var.root_device_name

    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_id
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = false
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = var.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = var.name })
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.min_size <= var.desired_capacity && var.desired_capacity <= var.max_size
      error_message = "Need min_size <= desired_capacity <= max_size."
    }
  }
}

resource "aws_autoscaling_group" "this" {
  name_prefix               = "${var.name}-"
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_type         = "EC2"
  health_check_grace_period = local.health_check_grace_period
  # The launch hook already waited for /readyz; the warm-up only lets the
  # new server's first discovery settle before the next replacement.
  default_instance_warmup = 30

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # Launch before terminate: a replacement enters service (its /readyz
  # answered) before the instance it replaces starts draining.
  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
      instance_warmup        = 30
      skip_matching          = true
    }
  }

  dynamic "initial_lifecycle_hook" {
    for_each = var.lifecycle_hooks.enabled ? [1] : []

    content {
      name                 = local.ready_hook
      lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
      # The script gives up (ABANDON) after ready_timeout_seconds; the
      # heartbeat is the backstop when user data never got that far.
      heartbeat_timeout = var.lifecycle_hooks.ready_timeout_seconds + 60
      default_result    = "ABANDON"
    }
  }

  dynamic "initial_lifecycle_hook" {
    for_each = var.lifecycle_hooks.enabled ? [1] : []

    content {
      name                 = local.drain_hook
      lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
      heartbeat_timeout    = local.drain_hook_seconds
      default_result       = "CONTINUE"
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = var.name })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    precondition {
      condition     = var.desired_capacity < 2 || length(distinct([for s in data.aws_subnet.this : s.availability_zone])) >= 2
      error_message = "desired_capacity is 2 or more but every subnet in subnet_ids is in one availability zone: give subnets in at least two zones, so that one zone's outage leaves a server running."
    }

    precondition {
      condition     = !var.lifecycle_hooks.enabled || local.drain_hook_seconds <= 7200
      error_message = "drain_timeout is too long for the termination hook (its heartbeat, drain_timeout + 55 s, is at most 7200 s): shorten drain_timeout."
    }
  }
}

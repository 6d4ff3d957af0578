# The server's security group has no ingress rule: clients arrive through the
# SSM agent on loopback. Egress is the database port to the RDS security
# groups and HTTPS to the SSM/RDS APIs (VPC endpoints or the listed CIDRs).
# AWS does not filter traffic to the instance metadata service and the VPC
# DNS resolver, so no rule is needed for either.

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-"
  description = "rdsproxy server ${var.name}: no ingress; egress to databases and AWS APIs"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "database" {
  count = length(var.rds_security_group_ids)

  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL to database security group"
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
  referenced_security_group_id = var.rds_security_group_ids[count.index]
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "database" {
  count = var.create_rds_ingress_rules ? length(var.rds_security_group_ids) : 0

  security_group_id            = var.rds_security_group_ids[count.index]
  description                  = "PostgreSQL from rdsproxy server ${var.name}"
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https_cidr" {
  count = length(local.https_egress_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "HTTPS to AWS APIs (SSM, RDS) and the binary download"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = local.https_egress_cidr_blocks[count.index]
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https_prefix_list" {
  count = length(var.https_egress_prefix_list_ids)

  security_group_id = aws_security_group.this.id
  description       = "HTTPS to a managed prefix list (e.g. the S3 gateway endpoint)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.https_egress_prefix_list_ids[count.index]
  tags              = local.tags
}

# --- optional interface endpoints -------------------------------------------

resource "aws_security_group" "endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  name_prefix = "${var.name}-endpoints-"
  description = "VPC endpoints for rdsproxy server ${var.name}: HTTPS from the server only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-endpoints" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from rdsproxy server ${var.name}"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https_endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  security_group_id            = aws_security_group.this.id
  description                  = "HTTPS to the VPC interface endpoints"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints[0].id
  tags                         = local.tags
}

resource "aws_vpc_endpoint" "this" {
  for_each = var.create_vpc_endpoints ? toset(concat(var.vpc_endpoint_services, local.logs_enabled ? ["logs"] : [])) : toset([])

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.value}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = length(var.vpc_endpoint_subnet_ids) > 0 ? var.vpc_endpoint_subnet_ids : var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
  tags                = merge(local.tags, { Name = "${var.name}-${each.value}" })
}

# A complete, private deployment: a VPC with no internet access at all, a
# PostgreSQL instance with IAM authentication, the rdsproxy server delivered
# from a private S3 bucket, and VPC endpoints for SSM, RDS and S3.
# `terraform apply` here is the integration test of modules/aws-server.

provider "aws" {
  region = var.region

  default_tags {
    tags = { Example = var.name }
  }
}

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 2)
}

# --- network: private subnets only, no internet or NAT gateway ---------------

resource "aws_vpc" "this" {
  cidr_block           = "10.42.0.0/16"
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

resource "aws_subnet" "private" {
  count = length(local.azs)

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(aws_vpc.this.cidr_block, 8, count.index)
  tags              = { Name = "${var.name}-private-${local.azs[count.index]}" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count = length(aws_subnet.private)

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# The instance downloads its binary from S3 through this gateway endpoint.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  tags              = { Name = "${var.name}-s3" }
}

# --- the database -----------------------------------------------------------

resource "aws_security_group" "db" {
  name_prefix = "${var.name}-db-"
  description = "Example PostgreSQL; ingress is added by the rdsproxy module"
  vpc_id      = aws_vpc.this.id
}

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_db_instance" "this" {
  identifier_prefix                   = "${var.name}-"
  engine                              = "postgres"
  engine_version                      = "17"
  instance_class                      = "db.t4g.micro"
  allocated_storage                   = 20
  storage_type                        = "gp3"
  storage_encrypted                   = true
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  publicly_accessible                 = false
  iam_database_authentication_enabled = true
  username                            = "postgres_admin"
  manage_master_user_password         = true
  skip_final_snapshot                 = true
  deletion_protection                 = false

  tags = {
    "rdsproxy:enabled" = "true"
    "rdsproxy:name"    = "example"
    "rdsproxy:db-name" = "postgres"
  }
}

# --- the binary, in a private bucket ----------------------------------------

resource "aws_s3_bucket" "binary" {
  bucket_prefix = "${var.name}-bin-"
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "binary" {
  bucket                  = aws_s3_bucket.binary.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_object" "binary" {
  bucket      = aws_s3_bucket.binary.id
  key         = "rdsproxy/linux-arm64/rdsproxy"
  source      = var.binary_path
  source_hash = filesha256(var.binary_path)
}

# --- the server ---------------------------------------------------------------

module "rdsproxy" {
  source = "../../modules/aws-server"

  name                   = var.name
  vpc_id                 = aws_vpc.this.id
  subnet_ids             = aws_subnet.private[*].id
  rds_security_group_ids = [aws_security_group.db.id]

  # No internet: SSM, SSM messages, EC2 messages, RDS, STS (and, with
  # cloudwatch_logs, CloudWatch Logs) through interface endpoints, S3
  # through the gateway endpoint's prefix list.
  create_vpc_endpoints         = true
  https_egress_cidr_blocks     = []
  https_egress_prefix_list_ids = [aws_vpc_endpoint.s3.prefix_list_id]

  binary = {
    sha256    = filesha256(var.binary_path)
    s3_bucket = aws_s3_object.binary.bucket
    s3_key    = aws_s3_object.binary.key
  }

  # The database administrator reaches the instance with the master password
  # (from Secrets Manager) through the same server, e.g. to create IAM users.
  static_targets = [{
    name     = "example-admin"
    endpoint = "${aws_db_instance.this.address}:${aws_db_instance.this.port}"
    auth     = "passthrough"
    database = "postgres"
    users    = ["postgres_admin"]
  }]

  # The session audit lines outlive the instances: CloudWatch Logs, through
  # the logs interface endpoint; the agent comes from the Amazon Linux
  # repositories through the S3 gateway endpoint.
  cloudwatch_logs = { enabled = true }

  developer_rds_connect = {
    resource_ids = [aws_db_instance.this.resource_id]
    db_users     = [var.developer_db_user]
  }
}
